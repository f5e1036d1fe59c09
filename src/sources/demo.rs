//! The demo source: realistic comments across communities, authors and
//! sentiments, at a steady rate, appended to `posts.raw` like any source.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::log::{Log, LogError};
use crate::record::{IncomingPost, now_micros};

/// The platform name of generated posts.
pub const PLATFORM: &str = "demo";

const COMMUNITIES: [&str; 8] = [
    "politics",
    "news",
    "worldnews",
    "technology",
    "science",
    "sports",
    "movies",
    "AskReddit",
];
const AUTHORS: [&str; 12] = [
    "quiet_otter",
    "Throwaway_4417",
    "maple_leafs_fan",
    "dr_kettle",
    "sunny-day-22",
    "NotARobot9000",
    "grumpy_cat_lady",
    "the_real_jim",
    "bookworm_ana",
    "late_night_coder",
    "PolicyWonk",
    "trailrunner",
];
const OPENINGS: [&str; 10] = [
    "Honestly,",
    "I think",
    "Wow,",
    "Not gonna lie,",
    "As someone who works in this field,",
    "Hot take:",
    "Can we talk about how",
    "Ugh,",
    "LOL",
    "Genuinely curious:",
];
const SUBJECTS: [&str; 10] = [
    "this bill",
    "the new update",
    "the game last night",
    "this article",
    "the ending",
    "the senator's answer",
    "the study",
    "the referee",
    "the trailer",
    "the price increase",
];
const POSITIVE: [&str; 8] = [
    "is really great and I love it",
    "was amazing, best thing I've seen all year!",
    "is a huge improvement, well done",
    "made me so happy :)",
    "is brilliant and long overdue",
    "is surprisingly good, thanks for sharing",
    "was fun and the crowd was awesome",
    "gives me hope, this is wonderful news",
];
const NEGATIVE: [&str; 8] = [
    "is terrible and nobody asked for it",
    "was awful, what a waste of time",
    "is a disaster and it makes me angry",
    "is so disappointing :(",
    "is the worst idea I've heard in years",
    "was boring and painfully slow",
    "is a scam, honestly disgusting",
    "made me sad and frustrated",
];
const NEUTRAL: [&str; 8] = [
    "is scheduled for next week",
    "was covered in the morning thread",
    "has a second part coming",
    "is about what I expected",
    "uses the same data as last year",
    "is on page 3 of the report",
    "starts at 8pm eastern",
    "is available in most regions",
];
const ENDINGS: [&str; 8] = [
    "",
    " Source: https://example.com/article",
    " **Edit:** typo.",
    " Anyone else?",
    "!!",
    " &amp; that's that.",
    " 😂",
    " Thoughts?",
];

/// A small deterministic generator (xorshift64*), so runs are varied but
/// reproducible from a seed.
#[derive(Debug, Clone)]
pub struct Generator {
    state: u64,
    run: String,
    count: u64,
}

impl Generator {
    /// A generator whose ids start with a run tag derived from `seed`.
    pub fn new(seed: u64) -> Generator {
        Generator {
            state: seed | 1,
            run: format!("{seed:x}"),
            count: 0,
        }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    /// The next post, created `now` (µs).
    pub fn post(&mut self, now: i64) -> IncomingPost {
        self.count += 1;
        let mood = self.next() % 3;
        let predicate = match mood {
            0 => self.pick(&POSITIVE),
            1 => self.pick(&NEGATIVE),
            _ => self.pick(&NEUTRAL),
        };
        let body = format!(
            "{} {} {}.{}",
            self.pick(&OPENINGS),
            self.pick(&SUBJECTS),
            predicate,
            self.pick(&ENDINGS)
        );
        let community = self.pick(&COMMUNITIES).to_string();
        let id = format!("{}-{}", self.run, self.count);
        IncomingPost {
            platform: PLATFORM.into(),
            url: Some(format!("https://example.com/r/{community}/comments/{id}")),
            id,
            community: Some(community),
            author: Some(self.pick(&AUTHORS).to_string()),
            body,
            created_at: now,
            parent_id: None,
            thread_id: None,
            score: Some((self.next() % 500) as i64 - 20),
            reposts: None,
            author_followers: None,
            location: None,
            lang: Some("en".into()),
        }
    }
}

/// Appends `rate` posts per second to `posts.raw` until `shutdown` or,
/// when given, `limit` posts. Returns how many it appended.
pub fn run(
    log: Arc<dyn Log>,
    rate: u32,
    limit: Option<u64>,
    seed: u64,
    shutdown: &CancellationToken,
) -> Result<u64, LogError> {
    let mut generator = Generator::new(seed);
    let rate = u64::from(rate.max(1));
    // Ten appends a second, each with a tenth of the rate.
    let tick = Duration::from_millis(100);
    let start = std::time::Instant::now();
    let mut sent = 0u64;
    while !shutdown.is_cancelled() && limit.is_none_or(|l| sent < l) {
        let due = rate * start.elapsed().as_millis() as u64 / 1000 + rate.div_ceil(10);
        let mut n = due.saturating_sub(sent);
        if let Some(l) = limit {
            n = n.min(l - sent);
        }
        if n > 0 {
            let now = now_micros();
            let posts = (0..n).map(|_| generator.post(now)).collect();
            crate::log::append_posts(&*log, posts, now)?;
            sent += n;
        }
        std::thread::sleep(tick);
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich;
    use crate::record::Sentiment;

    #[test]
    fn generated_posts_vary_and_span_every_sentiment() {
        let mut g = Generator::new(42);
        let posts: Vec<IncomingPost> = (0..300).map(|_| g.post(1_700_000_000_000_000)).collect();
        let ids: std::collections::HashSet<&str> = posts.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids.len(), 300, "ids are unique");
        let communities: std::collections::HashSet<_> = posts.iter().map(|p| p.community.clone()).collect();
        assert!(communities.len() >= 6);
        let mut seen = std::collections::HashSet::new();
        for p in &posts {
            seen.insert(enrich::score(&enrich::clean::clean(&p.body)).sentiment);
        }
        assert_eq!(seen.len(), 3, "positive, neutral and negative posts: {seen:?}");
        assert!(seen.contains(&Sentiment::Positive));
        // Another seed gives other ids, so a second demo run adds posts.
        assert_ne!(Generator::new(43).post(0).id, posts[0].id);
    }
}
