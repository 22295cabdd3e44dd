//! The `purser` command line: parse, load the configuration, call into the crates.
#![forbid(unsafe_code)]

use std::io::{IsTerminal, Read};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use purser_server::config::{Config, LoadOptions, LogLevel};

#[derive(Parser)]
#[command(
    name = "purser",
    version,
    about = "Token authentication server for container registries"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server. Without --config, reads config/purser.yaml if present, else built-in defaults.
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides server.listen.
        #[arg(long)]
        listen: Option<String>,
        /// Overrides log.level: error, warn, info, debug, trace.
        #[arg(long, value_enum)]
        log_level: Option<Level>,
    },
    /// Validate every layer and file offline; print the effective config with secrets redacted.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Read a password from stdin and print a bcrypt hash for the static backend.
    HashPassword {
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(4..=31))]
        cost: u32,
    },
    /// Write a signing key and a self-signed certificate, and print both key ids.
    Keygen {
        #[arg(long, value_enum)]
        alg: KeygenAlg,
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Check that a registry's config and purser's agree; with --registry, try the exchange once.
    Doctor {
        #[arg(long)]
        config: Option<PathBuf>,
        /// The registry's config.yml.
        #[arg(long)]
        registry_config: PathBuf,
        /// An env file (KEY=VALUE lines) whose REGISTRY_AUTH_TOKEN_* override the registry config.
        #[arg(long)]
        registry_env: Option<PathBuf>,
        /// The running registry (http://HOST:PORT): clock skew, and the exchange with --user.
        #[arg(long)]
        registry: Option<String>,
        /// USER:PASSWORD for the exchange; USER alone reads the password from stdin.
        #[arg(long, requires = "registry")]
        user: Option<String>,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Machine tokens: scoped, expiring secrets for CI and robots (authn.tokens.file).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Refuse every refresh token (docker's identity token) of an account issued at or before
    /// TIME, for any backend (token.revocations_file). Password logins still work.
    Revoke {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides token.revocations_file.
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long)]
        account: String,
        /// RFC 3339 (2026-11-30T12:00:00Z); default now.
        #[arg(long)]
        before: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a token: prints the secret (only) on stdout, a summary on stderr.
    Create {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides authn.tokens.file.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The user name the client logs in with.
        #[arg(long)]
        name: String,
        /// The account the policy sees (default: the name).
        #[arg(long)]
        account: Option<String>,
        #[arg(long = "group")]
        groups: Vec<String>,
        /// The most the token is ever granted, in the policy's patterns:
        /// repository:ci/app/**:pull,push. Repeatable; none: the policy alone decides.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// How long it works (3s, 12h, 90d), or `never`.
        #[arg(long, default_value = "90d")]
        expires: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the tokens (never their digests).
    List {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides authn.tokens.file.
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: ListFormat,
    },
    /// Remove a token: its logins and refresh tokens stop at once.
    Revoke {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides authn.tokens.file.
        #[arg(long)]
        file: Option<PathBuf>,
        name: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ListFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// For each scope, the granted actions and the rule that decided.
    Explain {
        #[arg(long)]
        config: Option<PathBuf>,
        /// The account ("" for anonymous).
        #[arg(long)]
        account: String,
        #[arg(long = "group")]
        groups: Vec<String>,
        /// A label of the caller, KEY=VALUE (an OIDC token's claim); repeatable.
        #[arg(long = "label", value_parser = purser_server::check::parse_label)]
        labels: Vec<(String, String)>,
        #[arg(long)]
        ip: Option<IpAddr>,
        /// The service (default: the first of token.service).
        #[arg(long)]
        service: Option<String>,
        #[arg(required = true)]
        scopes: Vec<String>,
    },
    /// Run policy test cases; exit 1 on any failure.
    Test {
        #[arg(long)]
        config: Option<PathBuf>,
        /// A label given to every case, KEY=VALUE (a case's own labels win); repeatable.
        #[arg(long = "label", value_parser = purser_server::check::parse_label)]
        labels: Vec<(String, String)>,
        cases: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl From<Level> for LogLevel {
    fn from(l: Level) -> Self {
        match l {
            Level::Error => LogLevel::Error,
            Level::Warn => LogLevel::Warn,
            Level::Info => LogLevel::Info,
            Level::Debug => LogLevel::Debug,
            Level::Trace => LogLevel::Trace,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum KeygenAlg {
    Rs256,
    Es256,
    Es384,
    Eddsa,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("purser: {msg}");
    ExitCode::from(1)
}

fn load(
    config: Option<PathBuf>,
    listen: Option<String>,
    log_level: Option<LogLevel>,
) -> Result<purser_server::config::Loaded, ExitCode> {
    let opts = LoadOptions {
        config_file: config,
        listen,
        log_level,
    };
    Config::load(&opts).map_err(|errors| {
        eprintln!("purser: the configuration has problems:\n{errors}");
        ExitCode::from(1)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            log_level,
        } => {
            let loaded = match load(config, listen, log_level.map(Into::into)) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let problems = loaded.config.validate();
            if !problems.is_empty() {
                for p in &problems {
                    eprintln!("purser: {p}");
                }
                return ExitCode::from(1);
            }
            purser_server::serve::init_logging(loaded.config.log.level, loaded.config.log.format);
            if let Some(f) = &loaded.config_file {
                tracing_log_config(f);
            }
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return fail(format!("cannot start the runtime: {e}")),
            };
            match rt.block_on(purser_server::serve::run(loaded.config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::CheckConfig { config } => {
            let loaded = match load(config, None, None) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let problems = purser_server::check::check(&loaded.config);
            println!("{}", loaded.config.to_redacted_yaml());
            if problems.is_empty() {
                eprintln!("purser: configuration OK");
                ExitCode::SUCCESS
            } else {
                for p in &problems {
                    eprintln!("purser: {p}");
                }
                ExitCode::from(1)
            }
        }
        Command::HashPassword { cost } => {
            let password = if std::io::stdin().is_terminal() {
                match rpassword::prompt_password("Password: ") {
                    Ok(p) => p,
                    Err(e) => return fail(format!("cannot read the password: {e}")),
                }
            } else {
                let mut s = String::new();
                if let Err(e) = std::io::stdin().read_to_string(&mut s) {
                    return fail(format!("cannot read the password from stdin: {e}"));
                }
                s.strip_suffix('\n')
                    .map(|x| x.strip_suffix('\r').unwrap_or(x))
                    .unwrap_or(&s)
                    .to_string()
            };
            if password.is_empty() {
                return fail("the password is empty; give one on stdin");
            }
            match purser_authn::static_users::hash_password(&password, cost) {
                Ok(h) => {
                    println!("{h}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Keygen { alg, out } => {
            use purser_token::Alg;
            let alg = match alg {
                KeygenAlg::Rs256 => Alg::Rs256,
                KeygenAlg::Es256 => Alg::Es256,
                KeygenAlg::Es384 => Alg::Es384,
                KeygenAlg::Eddsa => Alg::EdDsa,
            };
            match purser_token::write_generated(&out, alg) {
                Ok(files) => {
                    println!("key:          {}", files.key.display());
                    println!(
                        "certificate:  {}  (the registry's auth.token.rootcertbundle)",
                        files.cert.display()
                    );
                    println!("algorithm:    {}", files.alg);
                    println!(
                        "kid libtrust: {}  (registry 2.x; token.key_id: libtrust)",
                        files.key_ids.libtrust
                    );
                    println!(
                        "kid thumbprint: {}  (registry 3.x; token.key_id: thumbprint)",
                        files.key_ids.thumbprint
                    );
                    if alg == Alg::EdDsa {
                        println!("note: registry 2.x cannot verify EdDSA tokens; use this key with registry 3.x only");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Policy { command } => policy(command),
        Command::Token { command } => token(command),
        Command::Revoke {
            config,
            file,
            account,
            before,
        } => revoke(config, file, &account, before.as_deref()),
        Command::Doctor {
            config,
            registry_config,
            registry_env,
            registry,
            user,
        } => {
            let loaded = match load(config, None, None) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let user = match user {
                None => None,
                Some(u) => match purser_server::doctor::UserPassword::parse(&u) {
                    Some(up) => Some(up),
                    None => {
                        let password = if std::io::stdin().is_terminal() {
                            rpassword::prompt_password(format!("Password for {u}: "))
                                .map_err(|e| e.to_string())
                        } else {
                            let mut s = String::new();
                            std::io::stdin()
                                .read_to_string(&mut s)
                                .map(|_| s.trim_end_matches(['\n', '\r']).to_string())
                                .map_err(|e| e.to_string())
                        };
                        match password {
                            Ok(password) => {
                                Some(purser_server::doctor::UserPassword { user: u, password })
                            }
                            Err(e) => return fail(format!("cannot read the password: {e}")),
                        }
                    }
                },
            };
            let opts = purser_server::doctor::DoctorOptions {
                registry_config,
                registry_env,
                registry,
                user,
            };
            let report = purser_server::doctor::run(&loaded.config, &opts);
            print!("{report}");
            if report.healthy() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn tracing_log_config(file: &std::path::Path) {
    // Goes through the log subscriber so it lands in the same stream as everything else.
    purser_server::serve::log_config_file(file);
}

fn policy(command: PolicyCommand) -> ExitCode {
    match command {
        PolicyCommand::Explain {
            config,
            account,
            groups,
            labels,
            ip,
            service,
            scopes,
        } => {
            let loaded = match load(config, None, None) {
                Ok(l) => l,
                Err(code) => return code,
            };
            match purser_server::check::explain_labeled(
                &loaded.config,
                &account,
                groups,
                labels.into_iter().collect(),
                ip,
                service,
                &scopes,
            ) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        PolicyCommand::Test {
            config,
            labels,
            cases,
        } => {
            let loaded = match load(config, None, None) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let labels = labels.into_iter().collect();
            match purser_server::check::policy_test_labeled(&loaded.config, &cases, &labels) {
                Ok((passed, failures)) => {
                    for f in &failures {
                        println!("{f}");
                    }
                    println!("{passed} passed, {} failed", failures.len());
                    if failures.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => fail(e),
            }
        }
    }
}

fn now() -> i64 {
    purser_authn::tokens::unix_seconds(purser_core::Clock::wall(&purser_core::SystemClock))
}

/// The tokens file: `--file`, or `authn.tokens.file` of the configuration.
fn tokens_file(config: Option<PathBuf>, file: Option<PathBuf>) -> Result<PathBuf, ExitCode> {
    if let Some(f) = file {
        return Ok(f);
    }
    let loaded = load(config, None, None)?;
    match &loaded.config.authn.tokens {
        Some(t) => Ok(t.file.clone()),
        None => Err(fail(
            "authn.tokens is not configured: set authn.tokens.file (and add tokens to authn.order), or pass --file",
        )),
    }
}

fn token(command: TokenCommand) -> ExitCode {
    use purser_server::admin::tokens as admin;
    match command {
        TokenCommand::Create {
            config,
            file,
            name,
            account,
            groups,
            scopes,
            expires,
            description,
        } => {
            let expires = if expires == "never" {
                None
            } else {
                match expires.parse::<purser_server::config::HumanDuration>() {
                    Ok(d) if !d.0.is_zero() => Some(d.0),
                    _ => {
                        eprintln!("purser: --expires {expires:?}: write a duration (3s, 12h, 90d) or `never`");
                        return ExitCode::from(2);
                    }
                }
            };
            let path = match tokens_file(config, file) {
                Ok(p) => p,
                Err(code) => return code,
            };
            let spec = admin::CreateSpec {
                name,
                account,
                groups,
                scopes,
                expires,
                description,
            };
            match admin::create(&path, &spec, now()) {
                Ok(created) => {
                    println!("{}", created.secret);
                    let e = &created.entry;
                    let until = e
                        .expires
                        .map(purser_authn::tokens::format_time)
                        .unwrap_or_else(|| "never".into());
                    eprintln!(
                        "purser: created machine token {} (account {}) in {}, expires {until}; the secret above is shown once, store it in your CI's secret store",
                        e.name,
                        e.account,
                        path.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        TokenCommand::List {
            config,
            file,
            format,
        } => {
            let path = match tokens_file(config, file) {
                Ok(p) => p,
                Err(code) => return code,
            };
            match admin::list(&path) {
                Ok(entries) => {
                    match format {
                        ListFormat::Text => print!("{}", admin::list_text(&entries, now())),
                        ListFormat::Json => println!("{:#}", admin::list_json(&entries, now())),
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        TokenCommand::Revoke { config, file, name } => {
            let path = match tokens_file(config, file) {
                Ok(p) => p,
                Err(code) => return code,
            };
            match admin::revoke(&path, &name) {
                Ok(e) => {
                    eprintln!(
                        "purser: removed machine token {} (account {}) from {}",
                        e.name,
                        e.account,
                        path.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

fn revoke(
    config: Option<PathBuf>,
    file: Option<PathBuf>,
    account: &str,
    before: Option<&str>,
) -> ExitCode {
    let loaded = match load(config, None, None) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let path = file.unwrap_or_else(|| loaded.config.token.revocations_file.clone());
    if path.as_os_str().is_empty() {
        return fail(
            "token.revocations_file is not set: set it (the server watches it), or pass --file",
        );
    }
    let now = now();
    let before = match before {
        None => now,
        Some(t) => match purser_authn::tokens::parse_time(t) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("purser: --before: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let lifetime =
        i64::try_from(loaded.config.token.refresh_lifetime.0.as_secs()).unwrap_or(i64::MAX);
    match purser_server::revocations::revoke(&path, account, before, now, lifetime) {
        Ok(n) => {
            eprintln!(
                "purser: refresh tokens of {account} issued at or before {} are revoked ({} holds {n} accounts)",
                purser_authn::tokens::format_time(before),
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
