//! The `tocsin` binary: argument parsing, logging, signals, exit codes.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use tocsin::cli::{Cli, Command};
use tocsin::config::LogFormat;
use tocsin::{config, daemon};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config_path = cli.config.clone().unwrap_or_else(config::default_path);
    match cli.command {
        Command::Check { offline } => check(&config_path, offline),
        Command::Eval {
            rules,
            source,
            explain,
            files,
        } => {
            let loaded = match tocsin::load::load(&config_path, rules.as_deref()) {
                Ok(l) => l,
                Err(p) => {
                    eprint!("{}", daemon::render(&p.0));
                    return ExitCode::from(1);
                }
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
            match tocsin::eval::run(loaded, &source, &files, explain, &mut out) {
                Ok(0) => ExitCode::SUCCESS,
                Ok(_) => ExitCode::from(1),
                Err(e) => {
                    // A closed pipe (`| head`) is not an error worth a message.
                    if e.downcast_ref::<std::io::Error>()
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
                    {
                        return ExitCode::SUCCESS;
                    }
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Run { log_format } => run(&config_path, log_format),
        Command::Schema { which } => match tocsin::schema::schema(&which) {
            Some(s) => {
                emit(&format!("{s}\n"));
                ExitCode::SUCCESS
            }
            None => ExitCode::from(2),
        },
        Command::Test { files } => {
            let mut out = String::new();
            let code = tocsin::ruletest::run(&files, &mut out);
            emit(&out);
            ExitCode::from(code as u8)
        }
        Command::SendTest { channel } => {
            // A `log` channel writes to the log: here, stderr.
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
                .init();
            exit(
                tocsin::sendtest::run(&config_path, &channel)
                    .map(|answer| println!("sent to {channel}: {answer}")),
            )
        }
        Command::Silence { command } => exit(tocsin::silence::run(
            &config_path,
            &command,
            &mut std::io::stdout(),
        )),
        Command::Audit { command } => exit(tocsin::audit::run(
            &config_path,
            &command,
            &mut std::io::stdout().lock(),
        )),
        Command::Backup { file } => exit(backup(&config_path, &file)),
        Command::Migrate {
            from,
            to,
            password_env,
            password_file,
        } => {
            let password = match (password_env, password_file) {
                (Some(v), None) => Some(tocsin::secret::SecretRef::Env(v)),
                (None, Some(f)) => Some(tocsin::secret::SecretRef::File(f)),
                (None, None) => None,
                (Some(_), Some(_)) => {
                    eprintln!("error: --password-env and --password-file: give one of them");
                    return ExitCode::from(2);
                }
            };
            exit(migrate(&from, &to, password))
        }
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "tocsin", &mut out);
            emit(&String::from_utf8_lossy(&out));
            ExitCode::SUCCESS
        }
        Command::Man { dir } => exit(
            std::fs::create_dir_all(&dir)
                .and_then(|()| clap_mangen::generate_to(Cli::command(), &dir))
                .map_err(|e| {
                    anyhow::anyhow!("cannot write the man pages to {}: {e}", dir.display())
                }),
        ),
        Command::Alerts {
            firing,
            failed,
            since,
            json,
        } => {
            let opts = tocsin::alerts::Options {
                firing,
                failed,
                since,
                json,
            };
            exit(alerts(&config_path, &opts))
        }
    }
}

/// Exit 0, or 1 with the error (and its causes) on stderr.
fn exit(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn check(path: &std::path::Path, offline: bool) -> ExitCode {
    let secrets = config::verify_secrets(path, offline);
    let loaded = match tocsin::load::load(path, None) {
        Ok(l) if !secrets.iter().any(|d| d.is_error()) => Ok(l),
        Ok(_) => Err(tocsin::diag::Problems(secrets.clone())),
        Err(mut p) => {
            p.0.extend(secrets.iter().filter(|d| d.is_error()).cloned());
            Err(p)
        }
    };
    match loaded {
        Ok(l) => {
            let mut warnings = secrets;
            warnings.extend(tocsin::lint::warnings(&l));
            emit(&daemon::render(&warnings));
            emit(&format!(
                "{}: ok: {} sources, {} channels, {} rules in {} files{}\n",
                path.display(),
                l.config.sources.len(),
                l.config.channels.len(),
                l.compiled.rules.len(),
                l.rules.files.len(),
                match warnings.len() {
                    0 => String::new(),
                    1 => ", 1 warning".into(),
                    n => format!(", {n} warnings"),
                }
            ));
            ExitCode::SUCCESS
        }
        Err(p) => {
            emit(&daemon::render(&p.0));
            let n = p.0.iter().filter(|d| d.is_error()).count();
            emit(&format!(
                "{n} problem{} found\n",
                if n == 1 { "" } else { "s" }
            ));
            ExitCode::from(1)
        }
    }
}

fn alerts(path: &std::path::Path, opts: &tocsin::alerts::Options) -> anyhow::Result<()> {
    let config = config::Config::load_or_explain(path)?;
    if !config.state.exists() {
        anyhow::bail!(
            "no store at {} yet: the daemon creates it on its first run",
            config.state.display()
        );
    }
    let store = tocsin::store::Store::open(&config.state)?;
    let stdout = std::io::stdout();
    tocsin::alerts::run(&store, opts, &mut stdout.lock())
}

/// `tocsin migrate`: a stopped store copied into an empty one.
fn migrate(
    from: &str,
    to: &str,
    password: Option<tocsin::secret::SecretRef>,
) -> anyhow::Result<()> {
    use tocsin::store::{Location, RunLock, Store};
    let location = |s: &str| -> anyhow::Result<Location> {
        if Location::is_postgres_url(s) {
            if url::Url::parse(s).is_ok_and(|u| u.password().is_some()) {
                anyhow::bail!(
                    "{s}: the password may not be written in the URL; give it with --password-env VAR or --password-file FILE"
                );
            }
            Ok(Location::Postgres {
                url: s.to_string(),
                password: password.clone(),
                ca: None,
            })
        } else {
            Ok(Location::File(
                s.strip_prefix("sqlite://").unwrap_or(s).into(),
            ))
        }
    };
    let (from, to) = (location(from)?, location(to)?);
    if from == to {
        anyhow::bail!("--from and --to name the same store");
    }
    if !from.exists() {
        anyhow::bail!("no store at {from}");
    }
    // The store copied must be stopped: its daemon's lock is free, or no
    // instance holds its lease.
    let _lock = from.file().map(RunLock::take).transpose()?;
    let source = Store::open(&from)?;
    if from.file().is_none()
        && let Ok(l) = source.lease()
        && l.expires_in_ms > 0
    {
        anyhow::bail!(
            "{from}: instance {} leads on it (lease of epoch {}): stop the daemons first",
            l.holder,
            l.epoch
        );
    }
    let mut target = Store::open(&to)?;
    let copied = source.copy_into(&mut target)?;
    let rows: u64 = copied.iter().map(|(_, n)| n).sum();
    let list: Vec<String> = copied
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    emit(&format!(
        "copied {from} to {to}: {rows} rows ({})\n",
        list.join(", ")
    ));
    Ok(())
}

fn backup(path: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    let config = config::Config::load_or_explain(path)?;
    let Some(file) = config.state.file() else {
        anyhow::bail!(
            "{} is a PostgreSQL store: back it up with PostgreSQL's own tools (pg_dump, or the server's backups)",
            config.state
        );
    };
    let bytes = tocsin::store::backup(file, to)?;
    emit(&format!(
        "copied {} to {} ({bytes} bytes)\n",
        config.state.display(),
        to.display()
    ));
    Ok(())
}

/// Writes a command's output to stdout. A reader that stopped reading
/// (`| head`) is no error: the rest is dropped, without the panic that
/// `print!` makes of it.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Logs to stderr: the level from `RUST_LOG`, else the config, else info;
/// JSON lines when asked (`--log-format json` or the config), otherwise
/// lines for people, coloured on a terminal only, and without timestamps
/// when the journal stamps them itself (`JOURNAL_STREAM`).
fn init_logging(cfg: &tocsin::config::LogConfig, format: Option<LogFormat>) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    // The HTTP, TLS and SMTP crates write requests, headers and the SMTP
    // dialogue (AUTH included) at debug and trace: capped at info whatever
    // is asked, so that no credential reaches the log.
    const CAPPED: [&str; 8] = [
        "hyper",
        "hyper_util",
        "reqwest",
        "h2",
        "rustls",
        "tokio_rustls",
        "lettre",
        "axum",
    ];
    let spec = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| cfg.level.clone())
        .unwrap_or_else(|| "info".into());
    let kept: Vec<&str> = spec
        .split(',')
        .filter(|d| !CAPPED.iter().any(|c| d.trim().starts_with(c)))
        .collect();
    let caps: Vec<String> = CAPPED.iter().map(|c| format!("{c}=info")).collect();
    let filter = EnvFilter::try_new(format!("{},{}", kept.join(","), caps.join(",")))
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{}", caps.join(","))));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format.or(cfg.format) {
        Some(LogFormat::Json) => b.json().with_ansi(false).init(),
        _ if std::env::var_os("JOURNAL_STREAM").is_some() => {
            b.without_time().with_ansi(false).init()
        }
        _ => b.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn run(path: &std::path::Path, format: Option<LogFormat>) -> ExitCode {
    let secrets = config::verify_secrets(path, false);
    let loaded = match tocsin::load::load_kept(path) {
        Ok(l) if secrets.is_empty() => l,
        Ok(_) => {
            eprint!("{}", daemon::render(&secrets));
            return ExitCode::from(1);
        }
        Err(mut p) => {
            p.0.extend(secrets);
            eprint!("{}", daemon::render(&p.0));
            return ExitCode::from(1);
        }
    };
    init_logging(&loaded.config.log, format);
    for w in tocsin::lint::warnings(&loaded) {
        tracing::warn!("{}", w.headline());
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async {
        let control = daemon::Control::default();
        let stop = control.shutdown.clone();
        let reload = control.reload.clone();
        tokio::spawn(async move {
            wait_for_signals(reload).await;
            stop.cancel();
        });
        match daemon::run(loaded, control).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                ExitCode::from(1)
            }
        }
    })
}

/// SIGHUP asks for a reload; returns at SIGTERM or SIGINT.
async fn wait_for_signals(reload: std::sync::Arc<tokio::sync::Notify>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => return tracing::info!("SIGINT: stopping"),
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading");
                reload.notify_one();
            }
        }
    }
}
