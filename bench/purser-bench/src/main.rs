//! `purser-bench`: the benchmark driver and its parts (load generator, rates, HTTP limit).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use purser_bench::{driver, limit, load, rates};

#[derive(Parser)]
#[command(
    name = "purser-bench",
    about = "purser's benchmark (see docs/performance.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every scenario and print the table.
    Run {
        /// The purser binary under test (a release build). Without it, this binary's built-in
        /// copy of `purser serve` is used (smoke runs).
        #[arg(long)]
        purser: Option<PathBuf>,
        /// Working folder for keys, users, policies and logs (default: a fresh temporary one).
        #[arg(long)]
        work: Option<PathBuf>,
        /// CPUs for the server (taskset list).
        #[arg(long)]
        server_cpus: Option<String>,
        /// CPUs for the load generator (taskset list).
        #[arg(long)]
        load_cpus: Option<String>,
        /// A fraction of a second per scenario: checks that everything works.
        #[arg(long)]
        smoke: bool,
        /// Only scenarios whose name contains this (repeatable).
        #[arg(long)]
        only: Vec<String>,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The load generator: reads a JSON spec, prints a JSON result.
    Load {
        #[arg(long)]
        spec: PathBuf,
    },
    /// Signs tokens in a loop with a key file; prints a JSON rate.
    SignRate {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        secs: f64,
    },
    /// The signing libraries side by side (aws-lc, ring, ed25519-dalek), in alternating rounds;
    /// prints a table. Run it pinned: `taskset -c 1 purser-bench libraries`.
    Libraries {
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[arg(long, default_value_t = 1.0)]
        secs: f64,
    },
    /// Verifies bcrypt hashes in a loop; prints a JSON rate.
    BcryptRate {
        #[arg(long)]
        cost: u32,
        #[arg(long)]
        secs: f64,
    },
    /// The credential cache's memory: invented pairs, then accepted logins past the bound, in
    /// this process; prints a JSON result. See docs/performance.md.
    CacheMemory {
        #[arg(long, default_value_t = 100_000)]
        max_entries: usize,
        #[arg(long, default_value_t = 100)]
        real_users: usize,
        #[arg(long, default_value_t = 1_000_000)]
        pairs: usize,
    },
    /// The minimal hyper endpoint answering a fixed token-sized body.
    HttpLimit {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        body_len: usize,
    },
    /// A stand-in OpenID issuer: discovery and the JWKS over HTTPS (the OIDC scenario).
    Issuer {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        jwks: PathBuf,
    },
    /// `purser serve` and `purser keygen`, built in, for smoke runs without a purser binary.
    Purser {
        #[command(subcommand)]
        command: PurserCmd,
    },
}

#[derive(Subcommand)]
enum PurserCmd {
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    Keygen {
        #[arg(long)]
        alg: String,
        #[arg(long)]
        out: PathBuf,
    },
    Policy {
        #[command(subcommand)]
        command: PolicyCmd,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// `purser policy replay --format json`.
    Replay {
        #[arg(long)]
        policy: PathBuf,
        #[arg(long)]
        against: Option<PathBuf>,
        #[arg(long)]
        format: String,
        logs: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("purser-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

fn default_cpus() -> (String, String) {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    if n >= 2 {
        // The server gets the last CPU, the generator the one before it.
        ((n - 1).to_string(), (n - 2).to_string())
    } else {
        ("0".into(), "0".into())
    }
}

fn real_main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Run {
            purser,
            work,
            server_cpus,
            load_cpus,
            smoke,
            only,
            json,
        } => {
            let me = std::env::current_exe()?;
            let server = match purser {
                Some(p) => driver::ServerCommand {
                    program: std::fs::canonicalize(&p)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
                    prefix: vec![],
                },
                None => driver::ServerCommand {
                    program: me.clone(),
                    prefix: vec!["purser".into()],
                },
            };
            let (def_server, def_load) = default_cpus();
            let tmp;
            let work = match work {
                Some(w) => w,
                None => {
                    tmp = std::env::temp_dir().join(format!("purser-bench-{}", std::process::id()));
                    tmp
                }
            };
            let opts = driver::Options {
                server,
                bench_exe: me,
                work: work.clone(),
                server_cpus: server_cpus.unwrap_or(def_server),
                load_cpus: load_cpus.unwrap_or(def_load),
                smoke,
                only,
            };
            if opts.server_cpus == opts.load_cpus {
                eprintln!(
                    "purser-bench: warning: server and load generator share CPU {}",
                    opts.server_cpus
                );
            }
            let mut report = driver::run(&opts)?;
            purser_bench::edits::add_to(&opts, &mut report)?;
            purser_bench::replay::add_to(&opts, &mut report)?;
            print!("{}", driver::render(&report));
            if let Some(j) = json {
                std::fs::write(j, serde_json::to_vec_pretty(&report)?)?;
            }
            eprintln!("purser-bench: work files in {}", work.display());
            Ok(())
        }
        Cmd::Load { spec } => {
            let spec: load::LoadSpec = serde_json::from_slice(&std::fs::read(spec)?)?;
            print_json(&load::run(&spec)?)
        }
        Cmd::SignRate { key, secs } => {
            print_json(&rates::sign_rate(&key, Duration::from_secs_f64(secs))?)
        }
        Cmd::Libraries { rounds, secs } => {
            let rates = purser_bench::libraries::compare(rounds, Duration::from_secs_f64(secs))?;
            println!("| algorithm and library | signatures/s |\n| --- | ---: |");
            for r in rates {
                println!("| {} | {:.0} |", r.what, r.per_second);
            }
            Ok(())
        }
        Cmd::BcryptRate { cost, secs } => {
            print_json(&rates::bcrypt_rate(cost, Duration::from_secs_f64(secs))?)
        }
        Cmd::CacheMemory {
            max_entries,
            real_users,
            pairs,
        } => print_json(&purser_bench::cache_memory::measure(
            max_entries,
            real_users,
            pairs,
        )?),
        Cmd::HttpLimit { listen, body_len } => {
            limit::serve(listen, limit::token_sized_body(body_len))
        }
        Cmd::Issuer {
            listen,
            cert,
            key,
            jwks,
        } => purser_bench::issuer::serve(listen, &cert, &key, &jwks),
        Cmd::Purser { command } => purser(command),
    }
}

/// What `purser serve` and `purser keygen` do, through the same library calls.
fn purser(cmd: PurserCmd) -> anyhow::Result<()> {
    use purser_server::config::{Config, LoadOptions};
    match cmd {
        PurserCmd::Serve { config } => {
            let loaded = Config::load(&LoadOptions {
                config_file: Some(config),
                ..Default::default()
            })
            .map_err(|e| anyhow::anyhow!("the configuration has problems:\n{e}"))?;
            let problems = loaded.config.validate();
            if !problems.is_empty() {
                anyhow::bail!(
                    "{}",
                    problems
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            purser_server::serve::init_logging(loaded.config.log.level, loaded.config.log.format);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(purser_server::serve::run(loaded.config))?;
            Ok(())
        }
        PurserCmd::Keygen { alg, out } => {
            let alg: purser_token::Alg = alg.parse()?;
            purser_token::write_generated(&out, alg)?;
            Ok(())
        }
        PurserCmd::Policy {
            command:
                PolicyCmd::Replay {
                    policy,
                    against,
                    format,
                    logs,
                },
        } => {
            anyhow::ensure!(format == "json", "only --format json is built in");
            let report = purser_server::replay::replay(&purser_server::replay::ReplayOptions {
                policy,
                against,
                logs,
                service: None,
            })?;
            println!("{}", report.to_json());
            // As purser's exit code: 1 when a decision changed.
            std::process::exit(i32::from(report.changed_total() > 0));
        }
    }
}
