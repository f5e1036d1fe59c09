//! The `chorus` binary: parses the command line and calls the library.

use std::io::{self, IsTerminal};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use chorus::cli::score;

/// Collect social-media comments, score their sentiment, keep and query them.
#[derive(Parser)]
#[command(name = "chorus", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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

#[derive(Clone, Copy, ValueEnum)]
enum ScoreFormat {
    Table,
    Ndjson,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("chorus: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Score { texts, format } => {
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
                score::score_ndjson(&mut stdin.lock(), format, &mut out, &mut io::stderr())
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
