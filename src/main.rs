//! The `sipwake` binary: reads settings, sets up logging, runs the server.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::Context;
use sipwake::config::{self, LogFormat, RawSettings, Settings};
use sipwake::reload::{LogFilterFn, Reloader};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;

/// mimalloc instead of glibc's malloc: with a message handled on whichever runtime or
/// store thread is free, glibc keeps growing (`sysmalloc`, `mprotect`) and trimming
/// per-thread arenas under load; mimalloc's thread-local free lists allocate and free
/// in fewer instructions (docs/BENCHMARKS.md). Its memory defaults are tuned in
/// [`tune_allocator`].
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (mimalloc.h: the crate leaves
/// the option numbers out "for stability"; the C enum keeps them, and Cargo.lock pins
/// the version).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc gives pages back to the kernel only after `purge_delay` (1 s, times 10 for
/// arenas), and only when it is next called: a registrar that has just taken 100,000
/// REGISTERs and gone quiet keeps every page their transactions freed. Purged at
/// once, sipwake holds 0.9 KB of PSS per binding instead of 1.4 KB, for the same
/// instruction count per REGISTER (docs/BENCHMARKS.md, "Memory and the allocator";
/// the arena's commit on demand is set at build time, `.cargo/config.toml`). A
/// default only: the `MIMALLOC_PURGE_DELAY` environment variable still wins.
fn tune_allocator() {
    // SAFETY: a plain setter of a process-wide option, called first thing in
    // `main`, before any other thread exists (mimalloc: "not thread safe").
    unsafe {
        libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, 0);
    }
}

/// Environment variable whose log filter, when set, replaces `log.level`.
const LOG_ENV: &str = "SIPWAKE_LOG";

/// Exit status for bad usage or an invalid configuration, so that scripts can tell it
/// apart from a runtime failure (1).
const EXIT_USAGE: u8 = 2;

const USAGE: &str = "\
Usage: sipwake [--config FILE]
       sipwake --check-config FILE
       sipwake [--config FILE] --hash-user USER < password
       sipwake [--config FILE] bindings dump

SIP registrar and stateful proxy that wakes sleeping softphones with a push
before handing them a call.

Options:
  --config FILE        start with the settings in FILE (TOML); without it the
                       built-in defaults are used
  --check-config FILE  load and validate FILE and open every file it names
                       (users file, APNs key/certificate, payload template, FCM
                       service account, TLS certificate and key), print
                       \"FILE: ok\" and exit 0, or print the error and exit 2
  --hash-user USER     read USER's password from standard input (one line) and
                       print the line for auth.users_file, in the configured realm
  bindings dump        print every binding in the configured store (sqlite or
                       journal), one JSON object a line; works while sipwake runs
  -h, --help           print this help
  -V, --version        print the version

Environment:
  SIPWAKE__SECTION__KEY  overrides one setting, e.g. SIPWAKE__SIP__LISTEN=0.0.0.0:5060
                         (lists are comma-separated)
  SIPWAKE_LOG            log filter replacing log.level, e.g. info,sipwake=debug
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Run {
        config: Option<PathBuf>,
    },
    Check {
        config: PathBuf,
    },
    HashUser {
        user: String,
        config: Option<PathBuf>,
    },
    DumpBindings {
        config: Option<PathBuf>,
    },
    Help,
    Version,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let mut command: Option<Command> = None;
    while let Some(arg) = args.next() {
        // Accept both `--opt FILE` and `--opt=FILE`.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("{name} needs a file name"))
        };
        let next = match flag.as_str() {
            "-h" | "--help" => Command::Help,
            "-V" | "--version" => Command::Version,
            "--config" => Command::Run {
                config: Some(PathBuf::from(value("--config")?)),
            },
            "--check-config" => Command::Check {
                config: PathBuf::from(value("--check-config")?),
            },
            "--hash-user" => Command::HashUser {
                user: inline
                    .clone()
                    .or_else(|| args.next())
                    .filter(|v| !v.is_empty())
                    .ok_or("--hash-user needs a user name")?,
                config: None,
            },
            "bindings" if inline.is_none() => match args.next().as_deref() {
                Some("dump") => Command::DumpBindings { config: None },
                Some(other) => return Err(format!("unknown bindings command {other:?}")),
                None => return Err("bindings needs a command: dump".to_owned()),
            },
            other => return Err(format!("unknown argument {other:?}")),
        };
        if inline.is_some() && matches!(next, Command::Help | Command::Version) {
            return Err(format!("{flag} takes no value"));
        }
        // Help and version win over everything, like in most tools.
        command = match (command, next) {
            (Some(Command::Help), _) | (_, Command::Help) => Some(Command::Help),
            (Some(Command::Version), _) | (_, Command::Version) => Some(Command::Version),
            (None, next) => Some(next),
            // the realm comes from the settings
            (Some(Command::Run { config }), Command::HashUser { user, .. })
            | (Some(Command::HashUser { user, .. }), Command::Run { config }) => {
                Some(Command::HashUser { user, config })
            }
            (Some(Command::Run { config }), Command::DumpBindings { .. })
            | (Some(Command::DumpBindings { .. }), Command::Run { config }) => {
                Some(Command::DumpBindings { config })
            }
            (Some(_), _) => return Err("give only one of --config, --check-config".to_owned()),
        };
    }
    Ok(command.unwrap_or(Command::Run { config: None }))
}

fn main() -> ExitCode {
    tune_allocator();
    let command = match parse_args(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(msg) => {
            eprintln!("sipwake: {msg}\n\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match command {
        Command::Help => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("sipwake {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::HashUser { user, config } => hash_user(&user, config.as_deref()),
        Command::DumpBindings { config } => dump_bindings(config.as_deref()),
        Command::Check { config } => match config::load(Some(&config)) {
            // every file a setting names is opened and used as the start would
            Ok(settings) => match sipwake::server::preflight(&settings) {
                Ok(()) => {
                    println!("{}: ok", config.display());
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("{}: error: {err}", config.display());
                    ExitCode::from(EXIT_USAGE)
                }
            },
            Err(err) => {
                eprintln!("{}", describe_config_error(&err, Some(&config)));
                ExitCode::from(EXIT_USAGE)
            }
        },
        Command::Run { config } => {
            // the raw values are kept so that a reload can tell which keys changed
            let loaded = config::load_raw_settings(config.as_deref())
                .and_then(|raw| raw.clone().validate().map(|s| (raw, s)));
            let (raw, settings) = match loaded {
                Ok(loaded) => loaded,
                Err(err) => {
                    eprintln!(
                        "sipwake: {}",
                        describe_config_error(&err, config.as_deref())
                    );
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            // A bad SIPWAKE_LOG is a configuration error like any other: exit 2.
            let filter = match log_filter(&settings.log.level) {
                Ok(filter) => filter,
                Err(msg) => {
                    eprintln!("sipwake: error: {msg}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            match run(settings, raw, config, filter) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    // Straight to stderr rather than through tracing: the log filter
                    // could hide it, and logging may not have been set up.
                    eprintln!("sipwake: error: {err:#}");
                    // a configuration fault (a file a setting names, …) exits 2 like
                    // a bad setting, so that systemd stops restarting it
                    let config_fault = err
                        .downcast_ref::<sipwake::server::ServerError>()
                        .is_some_and(|e| e.is_config());
                    if config_fault {
                        ExitCode::from(EXIT_USAGE)
                    } else {
                        ExitCode::FAILURE
                    }
                }
            }
        }
    }
}

/// Prefixes a settings error with the file it came from, unless the error already
/// names the file (read and syntax errors do).
fn describe_config_error(err: &config::ConfigError, file: Option<&std::path::Path>) -> String {
    match (err, file) {
        (config::ConfigError::Read { .. } | config::ConfigError::Syntax { .. }, _) => {
            format!("error: {err}")
        }
        (_, Some(file)) => format!("{}: error: {err}", file.display()),
        (_, None) => format!("error: {err}"),
    }
}

/// `--hash-user`: reads a password line from standard input and prints the users
/// file line for `user` in the configured realm (both MD5 and SHA-256 hashes).
fn hash_user(user: &str, config: Option<&std::path::Path>) -> ExitCode {
    let settings = match config::load(config) {
        Ok(s) => s,
        Err(err) => {
            eprintln!("sipwake: {}", describe_config_error(&err, config));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(why) = sipwake::auth::users::check_user_name(user) {
        eprintln!("sipwake: --hash-user {user:?}: {why}");
        return ExitCode::from(EXIT_USAGE);
    }
    let realm = &settings.auth.realm;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        // no terminal control without another dependency: the password is echoed
        eprint!("Password for {user} in realm {realm} (visible as you type): ");
    }
    let mut password = String::new();
    if let Err(e) = stdin.read_line(&mut password) {
        eprintln!("sipwake: cannot read the password: {e}");
        return ExitCode::FAILURE;
    }
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("sipwake: --hash-user: empty password on standard input");
        return ExitCode::from(EXIT_USAGE);
    }
    println!("{}", sipwake::auth::users::line(user, realm, password));
    ExitCode::SUCCESS
}

/// `bindings dump`: every binding in the configured store, one JSON object a line,
/// read without disturbing a running sipwake.
fn dump_bindings(config: Option<&std::path::Path>) -> ExitCode {
    use sipwake::config::StoreBackend;
    use sipwake::registrar::{JournalStore, SqliteStore};
    use std::io::Write;
    let settings = match config::load(config) {
        Ok(s) => s,
        Err(err) => {
            eprintln!("sipwake: {}", describe_config_error(&err, config));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let path = &settings.store.path;
    let read = match settings.store.backend {
        StoreBackend::Sqlite => SqliteStore::read_bindings(path),
        StoreBackend::Journal => JournalStore::read_bindings(path),
        other => {
            eprintln!(
                "sipwake: bindings dump reads the sqlite and journal stores; store.backend is {}",
                format!("{other:?}").to_lowercase()
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let bindings = match read {
        Ok(b) => b,
        Err(err) => {
            eprintln!("sipwake: bindings dump: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for b in &bindings {
        let line = serde_json::to_string(b).unwrap_or_default();
        if writeln!(out, "{line}").is_err() {
            return ExitCode::FAILURE;
        }
    }
    if out.flush().is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The log filter: `SIPWAKE_LOG` when set, else `log.level`.
fn log_filter(level: &str) -> Result<Targets, String> {
    match std::env::var(LOG_ENV) {
        Ok(from_env) if !from_env.trim().is_empty() => Targets::from_str(from_env.trim())
            .map_err(|e| format!("{LOG_ENV}: invalid log filter {from_env:?}: {e}")),
        _ => Targets::from_str(level)
            .map_err(|e| format!("log.level: invalid log filter {level:?}: {e}")),
    }
}

fn run(
    settings: Settings,
    raw: RawSettings,
    config: Option<PathBuf>,
    filter: Targets,
) -> anyhow::Result<()> {
    let set_filter = init_logging(filter, settings.log.format)?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config.as_deref().map_or_else(|| "built-in defaults".into(), |p| p.display().to_string()),
        listen = ?settings.sip.listen,
        udp = settings.sip.udp,
        tcp = settings.sip.tcp,
        upstream = settings.upstream.uri.as_ref().map(|u| u.uri.as_str()).unwrap_or("none"),
        store = ?settings.store.backend,
        "starting sipwake"
    );
    // every connection is a file descriptor: take all the system allows
    match sipwake::rlimit::raise_nofile() {
        Some(n) => tracing::info!(open_files = n, "open-file limit"),
        None => tracing::debug!("open-file limit: unlimited or unknown"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sipwake")
        .build()
        .context("cannot start the async runtime")?;
    let reloader = Reloader::new(config, raw, Some(set_filter));
    runtime.block_on(sipwake::server::run_with(settings, Some(reloader)))?;
    // tasks still open (a dialog's transaction, a connection) are simply dropped
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    tracing::info!("sipwake stopped");
    Ok(())
}

/// Installs the global subscriber: lines on stderr, human (colored only on a
/// terminal, so that files and journald get plain text) or JSON, behind a filter that
/// SIGHUP can replace. Returns the function that replaces it.
fn init_logging(filter: Targets, format: LogFormat) -> anyhow::Result<LogFilterFn> {
    let (filter, handle) = reload::Layer::new(filter);
    let human = (format == LogFormat::Human).then(|| {
        tracing_subscriber::fmt::layer()
            // peers' bytes reach fields: escaped, they cannot forge or break lines
            .fmt_fields(sipwake::logfmt::EscapedFields::new())
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
    });
    let json = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
    });
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(human)
        .with(json);
    tracing::subscriber::set_global_default(subscriber).context("cannot install the logger")?;
    Ok(Box::new(move |level: &str| {
        let filter = log_filter(level)?;
        if std::env::var(LOG_ENV).is_ok_and(|v| !v.trim().is_empty()) {
            return Err(format!("{LOG_ENV} is set and replaces log.level"));
        }
        handle.reload(filter).map_err(|e| e.to_string())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    /// The option number is mimalloc's `mi_option_purge_delay`: its built-in default
    /// (1,000 ms, which no neighbouring option has) is what that number reads before
    /// `tune_allocator` runs, and 0 after.
    #[test]
    fn the_allocator_option_set_is_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // the environment decides; nothing of ours to check
        }
        // SAFETY: reads and one set of a process-wide option; no other test touches it
        let before = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(before, 1000, "not the purge delay");
        tune_allocator();
        let after = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(after, 0);
    }

    #[test]
    fn arguments() {
        assert_eq!(parse(&[]), Ok(Command::Run { config: None }));
        assert_eq!(
            parse(&["--config", "a.toml"]),
            Ok(Command::Run {
                config: Some("a.toml".into())
            })
        );
        assert_eq!(
            parse(&["--config=a.toml"]),
            Ok(Command::Run {
                config: Some("a.toml".into())
            })
        );
        assert_eq!(
            parse(&["--check-config", "a.toml"]),
            Ok(Command::Check {
                config: "a.toml".into()
            })
        );
        assert_eq!(parse(&["--config", "a", "--help"]), Ok(Command::Help));
        assert_eq!(parse(&["-V"]), Ok(Command::Version));
        assert!(parse(&["--config"]).is_err());
        assert!(parse(&["--config="]).is_err());
        assert!(parse(&["--config", "a", "--check-config", "b"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["a.toml"]).is_err());
        assert!(parse(&["--help=x"]).is_err());
        assert_eq!(
            parse(&["--config", "a", "--hash-user", "alice"]),
            Ok(Command::HashUser {
                user: "alice".into(),
                config: Some("a".into())
            })
        );
        assert_eq!(
            parse(&["--hash-user=bob"]),
            Ok(Command::HashUser {
                user: "bob".into(),
                config: None
            })
        );
        assert!(parse(&["--hash-user"]).is_err());
        assert_eq!(
            parse(&["--config", "a", "bindings", "dump"]),
            Ok(Command::DumpBindings {
                config: Some("a".into())
            })
        );
        assert_eq!(
            parse(&["bindings", "dump"]),
            Ok(Command::DumpBindings { config: None })
        );
        assert!(parse(&["bindings"]).is_err());
        assert!(parse(&["bindings", "list"]).is_err());
        assert!(parse(&["--hash-user", "a", "--check-config", "b"]).is_err());
    }
}
