//! The `purser` command line: parse, load the configuration, call into the crates.
#![forbid(unsafe_code)]

use std::io::{IsTerminal, Read};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
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
    /// `purser doctor ldap` walks one LDAP login through every step.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Doctor {
        #[command(subcommand)]
        command: Option<DoctorCommand>,
        #[arg(long)]
        config: Option<PathBuf>,
        /// The registry's config.yml.
        #[arg(long, required = true)]
        registry_config: Option<PathBuf>,
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
    /// Signing keys of token.keys_dir: list them, make the next one, activate it, retire the old.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
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
    /// Print a shell completion script on stdout (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (purser.1 and one per subcommand) into a folder.
    Man {
        #[arg(long, default_value = ".")]
        out: PathBuf,
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

#[derive(Subcommand)]
enum KeysCommand {
    /// Each key: name, state, algorithm, key ids (libtrust, thumbprint), created, activated,
    /// retire after.
    List {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Make a key and its certificate in state `next`: published (JWKS, token.bundle_file,
    /// token.jwks_file), not signing yet.
    Next {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Default token.generate_alg.
        #[arg(long, value_enum)]
        alg: Option<KeygenAlg>,
    },
    /// The next key (ID: its name, libtrust id or thumbprint) becomes active; the active one
    /// becomes retiring. Running servers switch without a restart.
    Activate {
        #[arg(long)]
        config: Option<PathBuf>,
        /// A registry's config.yml that must trust the key first (repeatable).
        #[arg(long = "registry-config")]
        registry_configs: Vec<PathBuf>,
        id: Option<String>,
    },
    /// Remove a retiring key once no token it signed can still be valid.
    Retire {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Retire it now: its refresh tokens stop working (users log in again).
        #[arg(long)]
        force: bool,
        id: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ListFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum DoctorCommand {
    /// Walk one login through the LDAP backend, step by step (the password from stdin, or a
    /// prompt on a terminal); with --scope, what the policy grants that identity. Exit 0 when
    /// the login would succeed, 1 naming the failing step.
    Ldap {
        #[arg(long)]
        config: Option<PathBuf>,
        /// The user name, as typed at `docker login`.
        #[arg(long)]
        user: String,
        /// A scope to decide for the identity found (`repository:NAME:ACTIONS`); repeatable.
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
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
    /// Decide the requests of JSON audit logs again with POLICY and list the decisions that
    /// change; exit 1 when any does, 0 when none does, 2 on bad input.
    Replay {
        /// The policy to decide with.
        #[arg(long)]
        policy: PathBuf,
        /// The policy to compare with (default: the decisions recorded in the log).
        #[arg(long)]
        against: Option<PathBuf>,
        /// The service of records that do not name one (logs of older versions).
        #[arg(long)]
        service: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: ListFormat,
        /// purser's JSON logs (gzipped or not); `-` for standard input.
        #[arg(required = true)]
        logs: Vec<PathBuf>,
    },
    /// Check the shadow policy (authz.shadow_policy_file) and make it the policy
    /// (authz.policy_file), in one rename; the replaced policy is kept as POLICY.previous.
    Promote {
        #[arg(long)]
        config: Option<PathBuf>,
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
        Command::Keys { command } => keys(command),
        Command::Revoke {
            config,
            file,
            account,
            before,
        } => revoke(config, file, &account, before.as_deref()),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "purser", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man { out } => match clap_mangen::generate_to(Cli::command(), &out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(format!(
                "cannot write the manual pages into {}: {e}",
                out.display()
            )),
        },
        Command::Doctor {
            command:
                Some(DoctorCommand::Ldap {
                    config,
                    user,
                    scopes,
                }),
            ..
        } => doctor_ldap(config, &user, &scopes),
        Command::Doctor {
            command: None,
            config,
            registry_config,
            registry_env,
            registry,
            user,
        } => {
            let Some(registry_config) = registry_config else {
                return fail("--registry-config is required");
            };
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

fn alg_of(a: KeygenAlg) -> purser_token::Alg {
    use purser_token::Alg;
    match a {
        KeygenAlg::Rs256 => Alg::Rs256,
        KeygenAlg::Es256 => Alg::Es256,
        KeygenAlg::Es384 => Alg::Es384,
        KeygenAlg::Eddsa => Alg::EdDsa,
    }
}

fn keys(command: KeysCommand) -> ExitCode {
    use purser_server::keys::admin::Folder;
    let config = match &command {
        KeysCommand::List { config }
        | KeysCommand::Next { config, .. }
        | KeysCommand::Activate { config, .. }
        | KeysCommand::Retire { config, .. } => config.clone(),
    };
    let loaded = match load(config, None, None) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let config = &loaded.config;
    let Some(folder) = Folder::of(config) else {
        return fail("token.keys_dir is not set: purser keys works on a key folder; set token.keys_dir (the current signing_key_file becomes its first active key)");
    };
    let now = now();
    match command {
        KeysCommand::List { .. } => match folder.ensure(now) {
            Ok(set) => {
                print!("{}", folder.list_text(&set));
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        KeysCommand::Next { alg, .. } => match folder.next(alg.map(alg_of), now) {
            Ok(name) => {
                let out = folder.load().ok().and_then(|set| {
                    set.find(&name).map(|k| {
                        (
                            k.ids.clone(),
                            purser_server::keys::cert_path(folder.dir, &name),
                        )
                    })
                });
                eprintln!("purser: made {name} (next): published, not signing yet");
                if let Some((ids, cert)) = out {
                    println!("name:           {name}");
                    println!("certificate:    {}", cert.display());
                    println!("kid libtrust:   {}", ids.libtrust);
                    println!("kid thumbprint: {}", ids.thumbprint);
                }
                eprintln!("purser: next, give every registry the new trust (token.bundle_file or token.jwks_file, or append the certificate), restart them, then run `purser keys activate`");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        KeysCommand::Activate {
            registry_configs,
            id,
            ..
        } => {
            let check = |_: &purser_server::keys::KeySet,
                         key: &purser_server::keys::LoadedKey|
             -> Result<(), String> {
                let cert = purser_server::keys::cert_path(folder.dir, &key.entry.name);
                let mut refusals = Vec::new();
                for reg in &registry_configs {
                    let problems = purser_server::doctor::key_trust_problems(
                        config,
                        reg,
                        key.signer.public_key(),
                        &cert,
                    );
                    for f in problems {
                        refusals.push(format!(
                            "registry {}: {}: {} -> {}",
                            reg.display(),
                            f.check,
                            f.what,
                            f.fix
                        ));
                    }
                }
                if refusals.is_empty() {
                    return Ok(());
                }
                let bundle = if config.token.bundle_file.as_os_str().is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} already holds every published key)",
                        config.token.bundle_file.display()
                    )
                };
                Err(format!(
                    "not activating {}: a registry does not trust it yet, and would refuse every token it signs{bundle}:\n  {}",
                    key.entry.name,
                    refusals.join("\n  ")
                ))
            };
            match folder.activate(id.as_deref(), now, check) {
                Ok((new, old)) => {
                    eprintln!("purser: {new} is active, {old} is retiring; running servers sign with {new} from their next reload (at most a few seconds)");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        KeysCommand::Retire { force, id, .. } => match folder.retire(&id, now, force) {
            Ok(name) => {
                eprintln!("purser: retired {name}: no longer published; remove it from the registries' trust at their next restart");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
    }
}

/// `purser doctor ldap`: the report on stdout, exit 1 naming the failing step.
fn doctor_ldap(config: Option<PathBuf>, user: &str, scopes: &[String]) -> ExitCode {
    let loaded = match load(config, None, None) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let password = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("Password for {user}: ")).map_err(|e| e.to_string())
    } else {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map(|_| s.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| e.to_string())
    };
    let password = match password {
        Ok(p) => p,
        Err(e) => return fail(format!("cannot read the password: {e}")),
    };
    let (report, ok) = purser_server::doctor::ldap::ldap(&loaded.config, user, &password, scopes);
    print!("{report}");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
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
        PolicyCommand::Replay {
            policy,
            against,
            service,
            format,
            logs,
        } => replay(
            purser_server::replay::ReplayOptions {
                policy,
                against,
                logs,
                service,
            },
            format,
        ),
        PolicyCommand::Promote { config } => {
            let loaded = match load(config, None, None) {
                Ok(l) => l,
                Err(code) => return code,
            };
            match purser_server::admin::promote::promote(&loaded.config) {
                Ok(p) => {
                    let kept = p
                        .previous
                        .map(|k| format!("; the replaced policy is kept as {}", k.display()))
                        .unwrap_or_default();
                    eprintln!(
                        "purser: {} ({} rules) is now the policy {}{kept}; a running server loads it within seconds",
                        p.shadow.display(),
                        p.rules,
                        p.policy.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

fn replay(opts: purser_server::replay::ReplayOptions, format: ListFormat) -> ExitCode {
    match purser_server::replay::replay(&opts) {
        Ok(report) => {
            match format {
                ListFormat::Text => print!("{}", report.render_text()),
                ListFormat::Json => println!("{:#}", report.to_json()),
            }
            if report.changed_total() > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("purser: {e}");
            ExitCode::from(2)
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
