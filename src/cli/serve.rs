//! `chorus run`, `chorus demo`, and the commands that work on a data
//! directory: through the running server when `server.json` names one,
//! else by opening the directory themselves.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::{ingest, status, tail};
use crate::config::{Config, TOKENS_ENV};
use crate::mapping::Format;
use crate::topology::{self, Front, Pipeline, Role, Roles, ServerInfo};
use crate::warehouse::external::Engine;
use crate::wire::sql;

pub use crate::topology::DemoOptions;

/// Cancels `token` on Ctrl-C or SIGTERM.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    token.cancel();
                    return;
                }
            };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("Shutting down: flushing the archive.");
        token.cancel();
    });
}

/// `chorus run` / `chorus demo`: serves until Ctrl-C or SIGTERM.
pub async fn run(
    config: Config,
    data: &Path,
    listen: Option<SocketAddr>,
    demo: Option<DemoOptions>,
    roles: Roles,
) -> anyhow::Result<()> {
    let address = listen.unwrap_or(config.server.listen);
    roles.check(&config).map_err(anyhow::Error::msg)?;
    topology::check_listen(address, &config.tokens())?;
    for source in &config.sources {
        source
            .validate()
            .with_context(|| format!("[[sources]] {}", source.name()))?;
    }
    if let Some(info) = topology::running_server(data) {
        bail!(
            "{} is already served by process {} at http://{}",
            data.display(),
            info.pid,
            info.address
        );
    }
    let pipeline = Pipeline::open(data, config).with_context(|| format!("opening {}", data.display()))?;
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let bound = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    if roles.all() {
        eprintln!("chorus: serving {} at http://{bound}", data.display());
    } else {
        eprintln!("chorus: running {roles} on {} at http://{bound}", data.display());
    }
    if roles.has(Role::Serve) {
        eprintln!("chorus: dashboard at http://{bound}/");
    }
    if let Some(options) = demo {
        eprintln!(
            "chorus: demo generating {} posts/s; open the dashboard, or try:\n  chorus search \"update\"\n  chorus sql \"SELECT community, sentiment, count(*) AS posts FROM posts GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 10\"",
            options.rate
        );
    }
    let front = Front {
        listener: Some(listener),
        demo,
        roles,
        ..Front::default()
    };
    let result = pipeline.run(front, shutdown.clone()).await;
    shutdown.cancel();
    result.context("pipeline")?;
    eprintln!("chorus: stopped; everything accepted is in {}", data.display());
    Ok(())
}

fn token() -> Option<String> {
    std::env::var(TOKENS_ENV)
        .ok()
        .and_then(|v| v.split(',').map(str::trim).find(|t| !t.is_empty()).map(String::from))
}

fn base(info: &ServerInfo) -> String {
    format!("http://{}", info.address)
}

/// Opens a data directory that no server is serving, with the archive
/// recovered.
fn open_offline(data: &Path, config: Config) -> anyhow::Result<Pipeline> {
    let pipeline = Pipeline::open(data, config).with_context(|| format!("opening {}", data.display()))?;
    pipeline.recover_archive()?;
    Ok(pipeline)
}

/// `chorus sql`.
pub async fn sql(
    config: Config,
    data: &Path,
    query: &str,
    format: sql::Format,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if let Some(info) = topology::running_server(data) {
        let name = match format {
            sql::Format::Table => "table",
            sql::Format::Csv => "csv",
            sql::Format::Json => "json",
            sql::Format::Ndjson => "ndjson",
        };
        let url = format!("{}/v1/sql?format={name}", base(&info));
        let request = reqwest::Client::new()
            .post(&url)
            .json(&serde_json::json!({"sql": query}));
        let (headers, body) = call(request, &format!("POST {url}")).await?;
        let truncated = headers
            .get(crate::wire::TRUNCATED_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        out.write_all(&body)?;
        if let Some(reason) = truncated {
            eprintln!("chorus: {reason}");
        }
        return Ok(());
    }
    let pipeline = open_offline(data, config)?;
    let result = pipeline.query_engine().await?.0.sql(query).await?;
    sql::write(&result, format, out)?;
    if let Some(reason) = &result.truncated {
        eprintln!("chorus: {reason}");
    }
    Ok(())
}

/// `chorus batch [--view NAME]`: runs the views now, through the running
/// server (which runs them), else on the directory itself with a progress
/// bar. Returns the runs; the caller fails when one did.
pub async fn batch(
    config: Config,
    data: &Path,
    view: Option<&str>,
    out: &mut dyn Write,
) -> anyhow::Result<Vec<crate::wire::ViewRun>> {
    use indicatif::{ProgressBar, ProgressStyle};
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} views · {msg}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let (runs, exports) = if let Some(info) = topology::running_server(data) {
        let mut url = format!("{}/v1/batch", base(&info));
        if let Some(view) = view {
            url.push_str(&format!("?view={view}"));
        }
        bar.set_length(1);
        bar.set_message(format!(
            "the server at {} runs {}",
            info.address,
            view.unwrap_or("every view")
        ));
        let (_, body) = call(reqwest::Client::new().post(&url), &format!("POST {url}")).await?;
        bar.set_position(1);
        // The server exports the new versions to the warehouse itself.
        (
            serde_json::from_slice(&body).context("the server's batch answer")?,
            Ok(Vec::new()),
        )
    } else {
        let pipeline = open_offline(data, config)?;
        let (engine, batch) = pipeline.query_engine().await?;
        let progress_bar = bar.clone();
        let on_progress: crate::views::OnProgress = Arc::new(move |event| match event {
            crate::views::Progress::Started { view, index, of } => {
                progress_bar.set_length(of as u64);
                progress_bar.set_position(index as u64);
                progress_bar.set_message(view);
            }
            crate::views::Progress::Rows(rows) => {
                let view = progress_bar.message();
                let view = view.split(':').next().unwrap_or_default().to_string();
                progress_bar.set_message(format!("{view}: {rows} rows"));
            }
            crate::views::Progress::Finished(_) => progress_bar.inc(1),
        });
        let runs = batch.run(view, on_progress).await.map_err(|e| anyhow::anyhow!(e))?;
        let exports = match pipeline.exporter(&engine) {
            Some(exporter) => {
                bar.set_message(format!(
                    "exporting to the warehouse {}",
                    pipeline.config().warehouse.describe()
                ));
                exporter.export_pending().await
            }
            None => Ok(Vec::new()),
        };
        (runs, exports)
    };
    bar.finish_and_clear();
    for run in &runs {
        match (&run.version, &run.error) {
            (Some(version), _) => writeln!(
                out,
                "{}: {} rows in {:.2} s (version {})",
                run.view, version.rows, run.seconds, version.version
            )?,
            (None, error) => writeln!(
                out,
                "{}: FAILED after {:.2} s: {}",
                run.view,
                run.seconds,
                error.as_deref().unwrap_or("(no reason given)")
            )?,
        }
    }
    let exports =
        exports.context("the views were built, but not exported to the warehouse (the server would retry)")?;
    for export in &exports {
        match export {
            Ok(e) => writeln!(out, "{}: exported to the warehouse ({} rows)", e.view, e.rows)?,
            Err((view, error)) => writeln!(out, "{view}: NOT exported to the warehouse: {error}")?,
        }
    }
    if exports.iter().any(Result::is_err) {
        anyhow::bail!("a view could not be exported to the warehouse");
    }
    Ok(runs)
}

/// `chorus lifecycle`: one pass of the archive's lifecycle now, by the
/// running server, else on the directory itself. Writes what it did;
/// returns it (the caller fails when an hour was skipped).
pub async fn lifecycle(config: Config, data: &Path, out: &mut dyn Write) -> anyhow::Result<crate::wire::LifecycleRun> {
    let run: crate::wire::LifecycleRun = if let Some(info) = topology::running_server(data) {
        let url = format!("{}/v1/lifecycle", base(&info));
        let (_, body) = call(reqwest::Client::new().post(&url), &format!("POST {url}")).await?;
        serde_json::from_slice(&body).context("the server's lifecycle answer")?
    } else {
        let pipeline = open_offline(data, config)?;
        let lifecycle = pipeline.lifecycle()?;
        let stop = CancellationToken::new();
        cancel_on_signals(stop.clone());
        tokio::task::spawn_blocking(move || lifecycle.run(&stop))
            .await
            .context("the lifecycle pass")??
    };
    write_lifecycle(&run, out)?;
    Ok(run)
}

/// `chorus lifecycle --s3-rules`: the S3 lifecycle configuration of
/// `[lifecycle]`, for the archive's prefix in its bucket (`[archive] url`
/// when it is s3://, else a placeholder), pretty-printed.
pub fn s3_rules(config: &Config, data: &Path) -> anyhow::Result<String> {
    let prefix = match config.archive.location(data).map_err(|e| anyhow::anyhow!(e))? {
        crate::sinks::archive::Location::Objects(url) => match url.path().trim_matches('/') {
            "" => String::new(),
            path => format!("{path}/"),
        },
        crate::sinks::archive::Location::Dir(_) => "<prefix>/".to_string(),
    };
    let rules = crate::lifecycle::s3_rules(&config.lifecycle, &prefix).map_err(|e| anyhow::anyhow!(e))?;
    Ok(serde_json::to_string_pretty(&rules)?)
}

/// A lifecycle pass, for people.
fn write_lifecycle(run: &crate::wire::LifecycleRun, out: &mut dyn Write) -> std::io::Result<()> {
    let e = &run.expired;
    if e.hours > 0 || e.error_days > 0 {
        writeln!(
            out,
            "expired {} hour partition{} ({} files) and {} day{} of dead letters past the archive's retention",
            e.hours,
            if e.hours == 1 { "" } else { "s" },
            e.files,
            e.error_days,
            if e.error_days == 1 { "" } else { "s" }
        )?;
    }
    let c = &run.compaction;
    let mb = |bytes: u64| bytes as f64 / 1e6;
    if c.hours == 0 {
        writeln!(
            out,
            "compacted nothing: no closed hour partition has enough small files"
        )?;
    } else {
        writeln!(
            out,
            "compacted {} hour{}: {} files -> {} ({} rows; {:.1} MB -> {:.1} MB)",
            c.hours,
            if c.hours == 1 { "" } else { "s" },
            c.files_before,
            c.files_after,
            c.rows,
            mb(c.bytes_before),
            mb(c.bytes_after)
        )?;
    }
    for skipped in &c.skipped {
        writeln!(out, "NOT compacted (left as it was): {skipped}")?;
    }
    writeln!(
        out,
        "removed {} replaced file{}; {:.2} s",
        run.retired_removed,
        if run.retired_removed == 1 { "" } else { "s" },
        run.seconds
    )
}

/// `chorus ddl redshift`: the tables (a view's from its current version's
/// columns, when it has one), the load of the archive at `s3`, and the
/// archive as a Spectrum external table.
pub fn redshift_ddl(config: &Config, data: &Path, s3: &str, iam_role: &str) -> anyhow::Result<String> {
    let root = config.archive.root(data).map_err(|e| anyhow::anyhow!(e))?;
    let store = crate::views::Store::new(&root);
    let mut views = Vec::new();
    for view in config.views().map_err(|e| anyhow::anyhow!(e))? {
        let Some(version) = store.current(&view.name)? else {
            continue;
        };
        if version.partial {
            // Partial sums (the speed layer's), not the view's columns.
            continue;
        }
        let path = store
            .version_dir(&view.name, &version.version)
            .join(crate::views::DATA_FILE);
        let file = std::fs::File::open(&path).with_context(|| path.display().to_string())?;
        let schema = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .with_context(|| path.display().to_string())?
            .schema()
            .clone();
        views.push((view.name, version.version, schema));
    }
    let mut ddl = crate::warehouse::redshift_ddl(&config.warehouse.schema, s3, iam_role, &views)?;
    ddl.push_str("\n-- The archive read in place by Redshift Spectrum, without loading it.\n");
    let external = format!("{}_archive", config.warehouse.schema);
    ddl.push_str(&crate::warehouse::external::ddl(
        Engine::Spectrum,
        &crate::record::batch::schema(),
        (&external, s3),
        Some((&config.warehouse.schema, iam_role)),
        &archive_hours(config, data)?,
    )?);
    Ok(ddl)
}

/// `chorus ddl athena|trino`: the archive at `s3` as an external table.
pub fn external_ddl(config: &Config, data: &Path, s3: &str, engine: Engine) -> anyhow::Result<String> {
    let schema = match engine {
        Engine::Trino => format!("hive.{}", config.warehouse.schema),
        _ => config.warehouse.schema.clone(),
    };
    Ok(crate::warehouse::external::ddl(
        engine,
        &crate::record::batch::schema(),
        (&schema, s3),
        None,
        &archive_hours(config, data)?,
    )?)
}

/// The archive's root on S3 for the DDL: `given`, else `[archive] url`
/// when it is s3://, else a placeholder to replace.
pub fn archive_s3_url(config: &Config, data: &Path, given: Option<String>) -> anyhow::Result<String> {
    if let Some(url) = given {
        return Ok(url);
    }
    Ok(match config.archive.location(data).map_err(|e| anyhow::anyhow!(e))? {
        crate::sinks::archive::Location::Objects(url) => url.to_string(),
        crate::sinks::archive::Location::Dir(_) => "s3://<bucket>/<prefix>".to_string(),
    })
}

/// The hour partitions of the archive, in its directory or bucket.
fn archive_hours(config: &Config, data: &Path) -> anyhow::Result<Vec<(chrono::NaiveDate, u32)>> {
    Ok(match config.archive.location(data).map_err(|e| anyhow::anyhow!(e))? {
        crate::sinks::archive::Location::Dir(root) => crate::warehouse::external::hours_under(&root),
        crate::sinks::archive::Location::Objects(url) => {
            let store = crate::sinks::archive::ObjectArchive::connect(&url, &config.archive.endpoint())
                .map_err(|e| anyhow::anyhow!(e))?;
            crate::sinks::archive::bucket::hours(&store).with_context(|| format!("listing the hours of {url}"))?
        }
    })
}

/// `chorus search`: through the running server, else over the index of a
/// stopped directory.
pub async fn search(
    config: Config,
    data: &Path,
    params: &crate::wire::search::SearchParams,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    use crate::wire::search::SearchResponse;
    let answer: SearchResponse = if let Some(info) = topology::running_server(data) {
        let url = format!("{}/v1/search", base(&info));
        let request = reqwest::Client::new().get(&url).query(params);
        let (_, body) = call(request, &format!("GET {url}")).await?;
        serde_json::from_slice(&body).context("the server's search answer")?
    } else {
        if !config.index.enabled {
            bail!("search is off: [index] enabled = false");
        }
        let pipeline = Pipeline::open(data, config)?;
        let request = params
            .request(crate::record::now_micros())
            .map_err(|e| anyhow::anyhow!(e))?;
        let searcher = pipeline.searcher()?;
        searcher.search(&request).map_err(|e| match e {
            crate::sinks::index::search::SearchError::Query {
                message,
                position: Some(p),
            } => anyhow::anyhow!("q: {message} (at byte {p})"),
            e => anyhow::anyhow!(e),
        })?
    };
    if json {
        serde_json::to_writer_pretty(&mut *out, &answer)?;
        writeln!(out)?;
        return Ok(());
    }
    print_search(&answer, out)?;
    Ok(())
}

/// A search answer as text: a line per hit, then the top lists.
fn print_search(answer: &crate::wire::search::SearchResponse, out: &mut dyn Write) -> std::io::Result<()> {
    let plain = |html: &str| {
        html.replace("<mark>", "[")
            .replace("</mark>", "]")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
    };
    writeln!(out, "{} posts", answer.total)?;
    for hit in &answer.hits {
        let created = hit["created_at"]
            .as_i64()
            .map(crate::sinks::index::search::micros_to_rfc3339)
            .unwrap_or_default();
        let text: String = plain(hit["highlight"].as_str().unwrap_or_default())
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        writeln!(
            out,
            "{created}  {:<9} {:>7}  {}/{}  {}",
            hit["sentiment"].as_str().unwrap_or_default(),
            hit["vader_compound"]
                .as_f64()
                .map(|v| format!("{v:+.3}"))
                .unwrap_or_default(),
            hit["community"].as_str().unwrap_or("-"),
            hit["author"].as_str().unwrap_or("-"),
            text
        )?;
    }
    if let Some(next) = &answer.next {
        writeln!(out, "more: --after {next}")?;
    }
    let s = answer.sentiment;
    writeln!(
        out,
        "sentiment: {} positive, {} neutral, {} negative",
        s.positive, s.neutral, s.negative
    )?;
    let list = |counts: &[crate::wire::search::Count]| {
        counts
            .iter()
            .map(|c| format!("{} ({})", c.key, c.count))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(out, "communities: {}", list(&answer.communities))?;
    writeln!(out, "authors: {}", list(&answer.authors))?;
    writeln!(out, "terms: {}", list(&answer.terms))?;
    Ok(())
}

/// `chorus ingest`.
pub async fn ingest(
    config: Config,
    data: &Path,
    files: &[PathBuf],
    format: &str,
    filter: &ingest::Filter,
) -> anyhow::Result<ingest::Summary> {
    let format = Format::parse(format).with_context(|| {
        format!("unknown format {format:?}: use auto, canonical, reddit, tweet, bluesky, mastodon or hackernews")
    })?;
    let mut stderr = std::io::stderr();
    let limits = config.server.limits();
    if let Some(info) = topology::running_server(data) {
        eprintln!("chorus: sending to the server at http://{}", info.address);
        let destination = ingest::Destination::Remote {
            base: base(&info),
            token: token(),
        };
        return ingest::ingest_files(files, format, filter, &destination, &limits, &mut stderr).await;
    }
    // No server: append to the log, with the stages running until
    // everything read is enriched and archived.
    let pipeline = Arc::new(open_offline(data, config)?);
    let log = pipeline.log();
    let destination = ingest::Destination::Log(&*log);
    let work = ingest::ingest_files(files, format, filter, &destination, &limits, &mut stderr);
    pipeline.run_alongside(work, true, CancellationToken::new()).await?
}

/// Where `chorus collect` sends and how it batches.
#[derive(Debug, Clone, Default)]
pub struct CollectOptions {
    /// A remote chorus (`--to`); else the running server, else the log.
    pub to: Option<String>,
    /// Most posts per request to the remote.
    pub batch_posts: Option<usize>,
    /// Longest a post waits for a fuller batch, ms.
    pub batch_ms: Option<u64>,
}

/// `chorus collect …`: runs one collector until Ctrl-C/SIGTERM or a fatal
/// error. To `--to URL` or the server running on `data`, through a durable
/// spool in `data/spool/<source>/`; else into the log, with the enrich and
/// archive stages running.
pub async fn collect(
    mut config: Config,
    data: &Path,
    source: crate::sources::SourceConfig,
    options: CollectOptions,
) -> anyhow::Result<()> {
    use crate::sources::output::{Remote, SPOOL_DIR};
    source.validate()?;
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    let remote = match (&options.to, topology::running_server(data)) {
        (Some(to), _) => Some(Remote::new(to, token())?),
        (None, Some(info)) => Some(Remote::new(&base(&info), token())?),
        (None, None) => None,
    };
    let name = source.name();
    let Some(mut remote) = remote else {
        // Only this collector: not the config's own [[sources]].
        config.sources.clear();
        let pipeline = Arc::new(open_offline(data, config)?);
        eprintln!("chorus: collecting {name} into {}", data.display());
        let progress = report_progress(name.clone(), pipeline.metrics(), shutdown.clone());
        let work = source.run(data, pipeline.log_output(), pipeline.metrics(), shutdown.clone());
        let result = pipeline.run_alongside(work, false, shutdown).await;
        progress.abort();
        return result?;
    };
    remote.batch_posts = options.batch_posts.unwrap_or(remote.batch_posts).max(1);
    remote.batch_ms = options.batch_ms.unwrap_or(remote.batch_ms);
    let spool_dir = data.join(SPOOL_DIR).join(&name);
    eprintln!(
        "chorus: collecting {name} to {} (spool: {})",
        remote.url,
        spool_dir.display()
    );
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let progress = report_progress(name.clone(), metrics.clone(), shutdown.clone());
    let result = topology::collect_to_remote(data, source, remote, metrics, shutdown).await;
    progress.abort();
    let (collected, left) = result?;
    if left > 0 {
        eprintln!(
            "chorus: {left} batches wait in {} and are sent at the next start",
            spool_dir.display()
        );
    }
    collected
}

/// Prints a line a minute while a collector makes progress.
fn report_progress(
    name: String,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = 0;
        loop {
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
                () = shutdown.cancelled() => return,
            }
            let (posts, retries) = (metrics.collector_posts.get(), metrics.collector_retries.get());
            if posts != last {
                eprintln!(
                    "chorus: {name}: {posts} posts collected ({} in the last minute), {retries} retries",
                    posts - last
                );
                last = posts;
            }
        }
    })
}

/// `chorus status`.
pub async fn status(config: Config, data: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let status = if let Some(info) = topology::running_server(data) {
        writeln!(out, "server: http://{} (pid {})", info.address, info.pid)?;
        remote_status(&info).await?
    } else {
        writeln!(out, "server: not running")?;
        let pipeline = Pipeline::open(data, config)?;
        let mut status = pipeline.consumers().status(&*pipeline.log())?;
        if pipeline.config().index.enabled
            && let Ok(searcher) = pipeline.searcher()
        {
            status.index = Some(crate::wire::IndexStatus {
                documents: searcher.documents(),
                bytes: searcher.disk_bytes(),
            });
        }
        // A listing of a bucket blocks: off the async threads.
        let stored = pipeline.archive_stored().ok();
        status.archive = tokio::task::spawn_blocking(move || stored.and_then(|s| s.summary().ok()))
            .await
            .ok()
            .flatten();
        status.views = pipeline.query_engine().await?.1.status();
        status
    };
    status::print(&status, out)?;
    Ok(())
}

/// `GET /v1/status` of a running server.
async fn remote_status(info: &ServerInfo) -> anyhow::Result<status::Status> {
    let url = format!("{}/v1/status", base(info));
    let (_, body) = call(reqwest::Client::new().get(&url), &format!("GET {url}")).await?;
    serde_json::from_slice(&body).context("the server's status answer")
}

/// Sends `request` (`what`, for errors) to the running server with the
/// token of the environment; its headers and body, or the server's
/// `error` as the failure.
async fn call(
    mut request: reqwest::RequestBuilder,
    what: &str,
) -> anyhow::Result<(reqwest::header::HeaderMap, axum::body::Bytes)> {
    if let Some(token) = token() {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.with_context(|| what.to_string())?;
    let (status, headers) = (response.status(), response.headers().clone());
    let body = response.bytes().await.with_context(|| what.to_string())?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or_else(|| format!("{what} answered {status}: {}", String::from_utf8_lossy(&body)));
        bail!("{message}");
    }
    Ok((headers, body))
}

/// `chorus tail`.
pub async fn tail(config: Config, data: &Path, options: &tail::Options, out: &mut dyn Write) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    if let Some(info) = topology::running_server(data) {
        // The server's partition count, which the data directory fixed.
        let status = remote_status(&info).await?;
        let partitions = status
            .stages
            .first()
            .map_or(config.log.partitions, |s| s.partitions.len() as u32);
        let source = tail::Source::Remote {
            base: base(&info),
            token: token(),
            partitions,
        };
        tail::tail(&source, options, out, &shutdown).await?;
    } else {
        let pipeline = Pipeline::open(data, config)?;
        let log = pipeline.log();
        tail::tail(&tail::Source::Log(&*log), options, out, &shutdown).await?;
    }
    Ok(())
}
