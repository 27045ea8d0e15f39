//! The `stocksblitz` binary.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stocksblitz_api::serve::{load, serve};
use stocksblitz_api::{config, journal_cli, logging};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// StocksBlitz: low-latency market data and order engine.
#[derive(Parser)]
#[command(name = "stocksblitz", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine, feeds and API (the default with no subcommand, on the embedded
    /// configs/default.toml).
    Serve {
        /// Config file; the embedded default when absent.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// "all": engine, feeds and API; "api": an API node fed market data through
        /// Redis by an engine node elsewhere (needs [redis]).
        #[arg(long, default_value = "all", value_parser = ["all", "api"])]
        role: String,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Mint a development token (signed with the key the server uses: the secret
    /// variable named in [auth], else the development key file, created if missing).
    Token {
        /// A configured account ([[orders.accounts]]).
        #[arg(long)]
        account: String,
        #[arg(long, value_parser = ["viewer", "trader", "admin"])]
        role: String,
        /// Rate-limit tier.
        #[arg(long, value_parser = ["standard", "premium"], default_value = "standard")]
        tier: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl_secs: u64,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Feed debugging tools on capture files.
    Feed {
        #[command(subcommand)]
        command: FeedCommand,
    },
    /// Order journal tools (read only).
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
    /// Audit log tools (read only).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain, sequence and every line of an audit log; prints a JSON
    /// summary, or the first broken line and why (exit status 1).
    Verify { file: PathBuf },
}

#[derive(Subcommand)]
enum JournalCommand {
    /// Check checksums, the hash chain and every record; with --config, also replay it
    /// through the order manager as start-up would. Prints a JSON summary.
    Verify {
        dir: PathBuf,
        /// The configuration the journal was written with (enables the replay).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print records as NDJSON.
    Dump {
        dir: PathBuf,
        /// First record number to print.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Last record number to print.
        #[arg(long)]
        to: Option<u64>,
    },
}

#[derive(Subcommand)]
enum FeedCommand {
    /// Print every normalized tick of a capture as NDJSON (errors go to stderr).
    Parse {
        #[arg(long, value_parser = ["binance", "coinbase", "kite"])]
        venue: String,
        /// Config whose [[instruments]] map venue symbols; the embedded default when absent.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Capture file: one frame per line, "<recv_ts_ns> t|b <frame>".
        capture: PathBuf,
    },
    /// Replay a capture with the venue's book sync rules and print the final book.
    Book {
        #[arg(long, value_parser = ["binance", "coinbase"])]
        venue: String,
        #[arg(long)]
        symbol: String,
        #[arg(long, default_value_t = 10)]
        depth: usize,
        #[arg(long, short)]
        config: Option<PathBuf>,
        capture: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file (with STOCKSBLITZ_* overrides applied) and exit.
    Check {
        /// Config file; the embedded default when absent.
        config: Option<PathBuf>,
    },
    /// Print the embedded default configuration.
    Default,
}

fn feed(command: FeedCommand) -> anyhow::Result<()> {
    use stocksblitz_feed_handlers::venue::{Venue, VenueNormalizer};
    use stocksblitz_feed_handlers::{capture, inspect};
    let (venue, config, path) = match &command {
        FeedCommand::Parse { venue, config, capture }
        | FeedCommand::Book {
            venue, config, capture, ..
        } => (venue, config, capture),
    };
    let venue = Venue::parse(venue).ok_or_else(|| anyhow::anyhow!("unknown venue {venue:?}"))?;
    let v = load(config.as_deref()).map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    let records = capture::read(path)?;
    let mut normalizer = VenueNormalizer::build(venue, &v.registry, &[])?;
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    match command {
        FeedCommand::Parse { .. } => {
            let summary = inspect::parse(
                &v.registry,
                &mut normalizer,
                &records,
                &mut stdout.lock(),
                &mut stderr.lock(),
            )?;
            eprintln!(
                "{} frames, {} ticks, {} bad frames",
                summary.frames, summary.ticks, summary.errors
            );
        }
        FeedCommand::Book { symbol, depth, .. } => {
            let book = inspect::book(
                &v.registry,
                &mut normalizer,
                &records,
                &symbol,
                depth,
                &mut stderr.lock(),
            )
            .map_err(|e| anyhow::anyhow!(e))?;
            println!("{}", serde_json::to_string_pretty(&book)?);
        }
    }
    Ok(())
}

fn token(account: &str, role: &str, tier: &str, ttl_secs: u64, config: Option<&std::path::Path>) -> anyhow::Result<()> {
    use stocksblitz_api::auth::{key, Role, Tier};
    let v = load(config).map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    let (Some(setup), Some(auth)) = (&v.orders, &v.config.auth) else {
        anyhow::bail!("this configuration has no [orders]/[auth]: order entry is off");
    };
    if !setup.accounts.iter().any(|a| a == account) {
        anyhow::bail!(
            "account {account:?} is not configured; configured: {}",
            setup.accounts.join(", ")
        );
    }
    if !(1..=366 * 86_400).contains(&ttl_secs) {
        anyhow::bail!("--ttl-secs must be between 1 and 31622400");
    }
    let role = Role::parse(role).ok_or_else(|| anyhow::anyhow!("unknown role {role:?}"))?;
    let tier = Tier::parse(tier).ok_or_else(|| anyhow::anyhow!("unknown tier {tier:?}"))?;
    let tokens = key::tokens(auth, true)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    println!("{}", tokens.mint(account, role, tier, now, ttl_secs)?);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(None, false),
        Some(Command::Serve { config, role }) => serve(config, role == "api"),
        Some(Command::Config {
            command: ConfigCommand::Check { config },
        }) => match load(config.as_deref()) {
            Ok(v) => {
                println!(
                    "config ok: {} instruments, {} feeds, api on {}",
                    v.registry.len(),
                    v.config.feeds.len(),
                    v.listen
                );
                Ok(())
            }
            Err(e) => Err(anyhow::anyhow!("configuration error: {e}")),
        },
        Some(Command::Feed { command }) => feed(command),
        Some(Command::Journal {
            command: JournalCommand::Verify { dir, config },
        }) => match config.map(|c| load(Some(&c))).transpose() {
            Ok(v) => journal_cli::verify(&dir, v.as_ref()),
            Err(e) => Err(anyhow::anyhow!("configuration error: {e}")),
        },
        Some(Command::Journal {
            command: JournalCommand::Dump { dir, from, to },
        }) => journal_cli::dump(&dir, from, to),
        Some(Command::Audit {
            command: AuditCommand::Verify { file },
        }) => stocksblitz_api::audit::chain::verify(&file)
            .map(|v| {
                println!(
                    "{}",
                    serde_json::json!({ "ok": true, "entries": v.entries, "last_seq": v.last_seq, "last_hash": v.last_hash })
                );
            })
            .map_err(|e| anyhow::anyhow!("audit log broken: {e}")),
        Some(Command::Token {
            account,
            role,
            tier,
            ttl_secs,
            config,
        }) => token(&account, &role, &tier, ttl_secs, config.as_deref()),
        Some(Command::Config {
            command: ConfigCommand::Default,
        }) => {
            print!("{}", config::DEFAULT_TOML);
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            logging::fatal(&e);
            ExitCode::from(2)
        }
    }
}
