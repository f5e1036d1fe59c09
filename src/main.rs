//! The `chorus` binary: parses the command line and calls the library.

use std::io::{self, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use chorus::cli::score;
use chorus::config::{self, Config};
use chorus::topology;

// Under load, perf counted 18% of the pipeline's samples in glibc's malloc
// and free, 6% with mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process. With the kernel's
/// `always` setting, every time the allocator reuses memory it had given
/// back, the kernel zeroes a whole 2 MiB page: 12% of the pipeline's samples
/// in perf; server CPU per post in `scripts/bench_pipeline.sh` went from
/// about 29 to 21–26 µs once off (databases give the same advice).
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes
    // nothing but the process's huge-page policy; failure is harmless.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Collect social-media comments, score their sentiment, keep and query them.
#[derive(Parser)]
#[command(name = "chorus", version, about)]
struct Cli {
    /// Data directory (default: $CHORUS_DATA, else ./chorus-data).
    #[arg(long, global = true, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Configuration file (default: ./chorus.toml if present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline: ingest API, enrich stage, archive.
    Run {
        /// Listen address (default: [server] listen, 127.0.0.1:7700).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Run only these stages, comma-separated: ingest, enrich, archive,
        /// index, serve, batch (default: all). Processes that split them
        /// share a Kafka log; serve and batch run with archive.
        #[arg(long, default_value = "ingest,enrich,archive,index,serve,batch")]
        roles: chorus::topology::Roles,
    },
    /// `run` plus a built-in generator of realistic posts.
    Demo {
        /// Listen address (default: [server] listen, 127.0.0.1:7700).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Posts per second (default: [demo] rate).
        #[arg(long)]
        rate: Option<u32>,
        /// Stop generating after this many posts (the server keeps running).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Backfill from NDJSON / JSON files (also .gz, .zst, Pushshift dumps).
    Ingest {
        /// Files to read.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// What the lines are: auto, canonical, reddit, tweet, bluesky, mastodon or hackernews.
        #[arg(long, default_value = "auto")]
        format: String,
        /// Keep posts created at or after this time (RFC 3339, YYYY-MM-DD or Unix seconds).
        #[arg(long)]
        since: Option<String>,
        /// Keep posts created before this time (RFC 3339, YYYY-MM-DD or Unix seconds).
        #[arg(long)]
        until: Option<String>,
        /// Keep posts of these communities (subreddits…), repeated or comma-separated.
        #[arg(long)]
        community: Vec<String>,
    },
    /// Collect posts from a platform into the log, or into a remote chorus.
    Collect {
        #[command(subcommand)]
        source: CollectSource,
        /// Send to this chorus (`http://host:7700`) through a durable local
        /// spool, instead of the running server or the log.
        #[arg(long, global = true)]
        to: Option<String>,
        /// Most posts per request to the remote.
        #[arg(long, global = true)]
        batch_posts: Option<usize>,
        /// Longest a post waits for a fuller batch, milliseconds.
        #[arg(long, global = true)]
        batch_ms: Option<u64>,
    },
    /// SQL over `posts` (every post) and `posts_latest` (one row per post).
    Sql {
        /// One SELECT statement.
        query: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = SqlFormat::Table)]
        format: SqlFormat,
    },
    /// Recompute the batch views now (all, or one), as their schedule would.
    Batch {
        /// Only this view.
        #[arg(long)]
        view: Option<String>,
    },
    /// Compact the archive's closed hour partitions, remove the hours past
    /// its retention and the files compaction replaced, now (as
    /// `[lifecycle]` does every interval).
    Lifecycle {
        /// Print the S3 lifecycle rules (JSON for `aws s3api
        /// put-bucket-lifecycle-configuration`) of `[lifecycle]`'s retention
        /// and storage classes instead.
        #[arg(long)]
        s3_rules: bool,
    },
    /// Print the DDL with which another engine reads the archive where it
    /// is (Athena, Trino, Redshift Spectrum) or loads it (Redshift).
    Ddl {
        /// The engine.
        #[arg(value_enum)]
        engine: DdlEngine,
        /// Where the archive is on S3 (its root: posts/ and views/ under
        /// it); default: `[archive] url` when it is s3://.
        #[arg(long)]
        s3: Option<String>,
        /// The IAM role Redshift's COPY reads the archive with.
        #[arg(long, default_value = "arn:aws:iam::<account>:role/<role>")]
        iam_role: String,
    },
    /// Full-text search over the index, with filters (as GET /v1/search).
    Search {
        /// Words, "phrases", AND/OR/NOT, field:value, prefix*; empty: all.
        #[arg(default_value = "")]
        query: String,
        #[command(flatten)]
        filters: SearchFilters,
        /// Output format.
        #[arg(long, value_enum, default_value_t = SearchFormat::Table)]
        format: SearchFormat,
    },
    /// Print the records of a topic as NDJSON (a console consumer).
    Tail {
        /// Topic: raw, enriched or dead.
        #[arg(long, default_value = "enriched")]
        topic: String,
        /// Start at the first record instead of the end.
        #[arg(long)]
        from_beginning: bool,
        /// Exit once caught up instead of waiting for new records.
        #[arg(long)]
        no_follow: bool,
        /// Exit after this many records.
        #[arg(long)]
        max: Option<u64>,
    },
    /// Per-stage offsets and lag.
    Status,
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Sentiment (TextBlob polarity/subjectivity and VADER) of each TEXT, or
    /// of NDJSON {"id","body"} lines on stdin, scored exactly as given.
    Score {
        /// Texts to score; without any, NDJSON lines are read from stdin.
        texts: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ScoreFormat::Table)]
        format: ScoreFormat,
    },
}

#[derive(Subcommand)]
enum CollectSource {
    /// The comment stream of subreddits (credentials: REDDIT_CLIENT_ID,
    /// REDDIT_CLIENT_SECRET, and REDDIT_USERNAME/REDDIT_PASSWORD for a
    /// script app).
    Reddit {
        /// Subreddits, `+`-separated: politics+news.
        #[arg(long)]
        subreddit: String,
        /// `<platform>:<app id>:<version> (by /u/<user>)`.
        #[arg(long)]
        user_agent: Option<String>,
        /// Token endpoint base URL.
        #[arg(long)]
        auth_url: Option<String>,
        /// API base URL.
        #[arg(long)]
        api_url: Option<String>,
        /// Page back after a full page of unseen comments.
        #[arg(long)]
        fill_gaps: bool,
        /// On a first start, skip the comments already there.
        #[arg(long)]
        skip_existing: bool,
    },
    /// Hacker News items, forward from the newest (no credentials).
    Hackernews {
        /// Firebase API base URL.
        #[arg(long)]
        api_url: Option<String>,
        /// On a first start, also fetch this many items before the newest.
        #[arg(long, default_value_t = 0)]
        backfill: u64,
    },
    /// Bluesky posts from Jetstream.
    Bluesky {
        /// Jetstream's subscribe URL.
        #[arg(long)]
        url: Option<String>,
        /// Keep posts in these languages (repeated or comma-separated).
        #[arg(long)]
        lang: Vec<String>,
        /// Keep posts containing one of these words (repeated or comma-separated).
        #[arg(long)]
        keyword: Vec<String>,
    },
    /// A Mastodon instance's streaming API (token: MASTODON_TOKEN).
    Mastodon {
        /// The instance: https://mastodon.social.
        #[arg(long)]
        instance: String,
        /// public, public/local, hashtag?tag=…, user.
        #[arg(long, default_value = "public")]
        stream: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print an annotated configuration with every default.
    Example,
}

#[derive(Clone, Copy, ValueEnum)]
enum ScoreFormat {
    Table,
    Ndjson,
}

/// The filters and page of `chorus search`, as `GET /v1/search` takes them.
#[derive(clap::Args)]
struct SearchFilters {
    /// Posts created since: RFC 3339, a date, or a span back (15m, 24h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// Posts created before (same forms).
    #[arg(long)]
    until: Option<String>,
    /// Only this community.
    #[arg(long)]
    community: Option<String>,
    /// Only this platform.
    #[arg(long)]
    platform: Option<String>,
    /// Only this author.
    #[arg(long)]
    author: Option<String>,
    /// Only this sentiment: positive, neutral or negative.
    #[arg(long)]
    sentiment: Option<String>,
    /// newest or relevance.
    #[arg(long)]
    sort: Option<String>,
    /// Hits to show (1 to 1000).
    #[arg(long)]
    limit: Option<String>,
    /// The cursor of the next page (printed with the hits).
    #[arg(long)]
    after: Option<String>,
}

impl SearchFilters {
    fn params(self, q: String) -> chorus::wire::search::SearchParams {
        chorus::wire::search::SearchParams {
            q: Some(q),
            since: self.since,
            until: self.until,
            community: self.community,
            platform: self.platform,
            author: self.author,
            sentiment: self.sentiment,
            sort: self.sort,
            limit: self.limit,
            after: self.after,
            interval: None,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum SearchFormat {
    Table,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum DdlEngine {
    /// Amazon Athena: an external table with partition projection on dt and hour.
    Athena,
    /// Trino's Hive connector: an external table partitioned by dt and hour.
    Trino,
    /// Amazon Redshift: the tables, COPY … FORMAT AS PARQUET from the archive, the merge; and the
    /// archive as a Spectrum external table.
    Redshift,
}

#[derive(Clone, Copy, ValueEnum)]
enum SqlFormat {
    Table,
    Csv,
    Json,
    Ndjson,
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CHORUS_LOG").unwrap_or_else(|_| "chorus=info,warn".into()),
        )
        .with_writer(io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("chorus: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Cli { data, config, command } = cli;
    match command {
        Command::Config {
            command: ConfigCommand::Example,
        } => {
            print!("{}", config::EXAMPLE);
            Ok(ExitCode::SUCCESS)
        }
        Command::Score { texts, format } => score_command(texts, format),
        command => {
            let config = Config::load(config.as_deref())?;
            let data = topology::data_dir(data.as_deref());
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(commands::run(command, config, data))
        }
    }
}

fn score_command(texts: Vec<String>, format: ScoreFormat) -> anyhow::Result<ExitCode> {
    {
        {
            let format = match format {
                ScoreFormat::Table => score::Format::Table,
                ScoreFormat::Ndjson => score::Format::Ndjson,
            };
            let stdout = io::stdout();
            let mut out = io::BufWriter::new(stdout.lock());
            let summary = if texts.is_empty() {
                let stdin = io::stdin();
                if stdin.is_terminal() {
                    eprintln!("chorus score: reading NDJSON {{\"id\",\"body\"}} lines from stdin (give TEXT arguments to score them instead)");
                }
                // Read by a thread of its own: the handle, not its lock.
                let mut input = io::BufReader::with_capacity(1 << 20, stdin);
                score::score_ndjson(&mut input, format, &mut out, &mut io::stderr())
            } else {
                score::score_texts(&texts, format, &mut out)
            }
            .context("chorus score")?;
            if summary.rejected > 0 {
                eprintln!(
                    "chorus score: {} line(s) rejected, {} scored",
                    summary.rejected, summary.scored
                );
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The commands that work on a data directory.
mod commands {
    use std::path::PathBuf;
    use std::process::ExitCode;

    use anyhow::Context;
    use chorus::cli::{serve, tail};
    use chorus::config::Config;
    use chorus::log::Topic;
    use chorus::warehouse::external::Engine;
    use chorus::wire::sql;

    use chorus::sources::SourceConfig;
    use chorus::sources::bluesky::BlueskyConfig;
    use chorus::sources::hackernews::HackerNewsConfig;
    use chorus::sources::mastodon::MastodonConfig;
    use chorus::sources::reddit::RedditConfig;

    use super::{CollectSource, Command, SqlFormat};

    pub async fn run(command: Command, config: Config, data: PathBuf) -> anyhow::Result<ExitCode> {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        match command {
            Command::Run { listen, roles } => serve::run(config, &data, listen, None, roles).await?,
            Command::Demo { listen, rate, count } => {
                let options = serve::DemoOptions {
                    rate: rate.unwrap_or(config.demo.rate),
                    count,
                };
                serve::run(config, &data, listen, Some(options), Default::default()).await?;
            }
            Command::Ingest {
                files,
                format,
                since,
                until,
                community,
            } => {
                let filter = chorus::cli::ingest::Filter::new(since.as_deref(), until.as_deref(), &community)?;
                let summary = serve::ingest(config, &data, &files, &format, &filter).await?;
                let filtered = if filter.is_active() {
                    format!(", {} left out by the filters", summary.skipped)
                } else {
                    String::new()
                };
                eprintln!(
                    "chorus ingest: {} posts accepted{filtered}, {} lines rejected",
                    summary.accepted, summary.rejected
                );
                if summary.rejected > 0 {
                    return Ok(ExitCode::FAILURE);
                }
            }
            Command::Sql { query, format } => {
                let format = match format {
                    SqlFormat::Table => sql::Format::Table,
                    SqlFormat::Csv => sql::Format::Csv,
                    SqlFormat::Json => sql::Format::Json,
                    SqlFormat::Ndjson => sql::Format::Ndjson,
                };
                serve::sql(config, &data, &query, format, &mut out).await?;
            }
            Command::Batch { view } => {
                let runs = serve::batch(config, &data, view.as_deref(), &mut out).await?;
                if runs.iter().any(|r| r.error.is_some()) {
                    return Ok(ExitCode::FAILURE);
                }
            }
            Command::Lifecycle { s3_rules: true } => {
                use std::io::Write as _;
                let rules = serve::s3_rules(&config, &data)?;
                writeln!(out, "{rules}")?;
            }
            Command::Lifecycle { s3_rules: false } => {
                let run = serve::lifecycle(config, &data, &mut out).await?;
                if !run.compaction.skipped.is_empty() {
                    return Ok(ExitCode::FAILURE);
                }
            }
            Command::Search { query, filters, format } => {
                let json = matches!(format, crate::SearchFormat::Json);
                serve::search(config, &data, &filters.params(query), json, &mut out).await?;
            }
            Command::Tail {
                topic,
                from_beginning,
                no_follow,
                max,
            } => {
                let topic =
                    Topic::from_name(&topic).with_context(|| format!("no topic {topic:?}: raw, enriched or dead"))?;
                let options = tail::Options {
                    topic,
                    from_beginning,
                    follow: !no_follow,
                    max,
                };
                serve::tail(config, &data, &options, &mut out).await?;
            }
            Command::Status => serve::status(config, &data, &mut out).await?,
            Command::Ddl { engine, s3, iam_role } => {
                use std::io::Write as _;
                let s3 = serve::archive_s3_url(&config, &data, s3)?;
                let ddl = match engine {
                    super::DdlEngine::Redshift => serve::redshift_ddl(&config, &data, &s3, &iam_role)?,
                    super::DdlEngine::Athena => serve::external_ddl(&config, &data, &s3, Engine::Athena)?,
                    super::DdlEngine::Trino => serve::external_ddl(&config, &data, &s3, Engine::Trino)?,
                };
                out.write_all(ddl.as_bytes())?;
            }
            Command::Collect {
                source,
                to,
                batch_posts,
                batch_ms,
            } => {
                let source = match source {
                    CollectSource::Reddit {
                        subreddit,
                        user_agent,
                        auth_url,
                        api_url,
                        fill_gaps,
                        skip_existing,
                    } => {
                        let defaults = RedditConfig::default();
                        SourceConfig::Reddit(RedditConfig {
                            subreddits: subreddit,
                            user_agent: user_agent.unwrap_or_default(),
                            auth_url: auth_url.unwrap_or(defaults.auth_url.clone()),
                            api_url: api_url.unwrap_or(defaults.api_url.clone()),
                            fill_gaps,
                            skip_existing,
                            ..defaults
                        })
                    }
                    CollectSource::Bluesky { url, lang, keyword } => {
                        let split = |v: Vec<String>| -> Vec<String> {
                            v.iter()
                                .flat_map(|s| s.split(','))
                                .map(|s| s.trim().to_string())
                                .filter(|s| !s.is_empty())
                                .collect()
                        };
                        let defaults = BlueskyConfig::default();
                        SourceConfig::Bluesky(BlueskyConfig {
                            url: url.unwrap_or(defaults.url.clone()),
                            langs: split(lang),
                            keywords: split(keyword),
                            ..defaults
                        })
                    }
                    CollectSource::Mastodon { instance, stream } => SourceConfig::Mastodon(MastodonConfig {
                        instance,
                        stream,
                        ..MastodonConfig::default()
                    }),
                    CollectSource::Hackernews { api_url, backfill } => {
                        let defaults = HackerNewsConfig::default();
                        SourceConfig::Hackernews(HackerNewsConfig {
                            api_url: api_url.unwrap_or(defaults.api_url.clone()),
                            backfill,
                            ..defaults
                        })
                    }
                };
                let options = serve::CollectOptions {
                    to,
                    batch_posts,
                    batch_ms,
                };
                serve::collect(config, &data, source, options).await?;
            }
            Command::Score { .. } | Command::Config { .. } => unreachable!("handled without a data directory"),
        }
        std::io::Write::flush(&mut out)?;
        Ok(ExitCode::SUCCESS)
    }
}
