//! The `refract` command line: the arguments, and which module under `cli/`
//! runs each command.

mod cli;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use refract::DataDir;

use cli::Stores;
use cli::output::{StdoutError, errln};

/// Keeps CQRS read models in sync with an event stream, running projections
/// as sandboxed WebAssembly components.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Directory of the embedded stores (events.db, models.db).
    #[arg(long, global = true, env = "REFRACT_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Event store URL: sqlite://PATH or postgres://USER@HOST:PORT/DB[?options[search_path]=SCHEMA].
    /// Default: sqlite://<data-dir>/events.db.
    #[arg(long, global = true, env = "REFRACT_EVENTS", value_name = "URL")]
    events: Option<String>,
    /// Read-model store URL, as for --events. Default: sqlite://<data-dir>/models.db.
    #[arg(long, global = true, env = "REFRACT_STORE", value_name = "URL")]
    store: Option<String>,
    /// Config file: sandbox limits and policies per projection, and any flag
    /// under [host] [default: ./refract.toml when it exists].
    #[arg(long, global = true, env = "REFRACT_CONFIG", value_name = "FILE")]
    #[allow(dead_code)] // Found before parsing (cli/settings.rs); declared for --help and the docs.
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host: load every *.wasm in the plugins folder and keep their read models in sync.
    /// The folder is watched: new files start projections, replaced ones rebuild blue/green, removed ones are
    /// withdrawn (on every node sharing the store). Projections deployed to the store run too.
    Run(cli::run::RunArgs),
    /// `run`, plus: rebuild plugin projects (Rust crates, Python `app.py`, JS `package.json`)
    /// under the plugins folder when their sources change.
    Dev(cli::run::RunArgs),
    /// Scaffold a working projection under the plugins folder, ready for `refract dev`.
    New(cli::new::NewArgs),
    /// Rebuild a projection's read model from position 0 as a new generation, then swap it in.
    /// Works with hosts running on the store (one of them does the work) or without one (this command does).
    Rebuild(cli::rebuild::RebuildArgs),
    /// Rebuild the active module into a shadow model up to the active checkpoint and compare it
    /// with the store document by document; exits non-zero listing the documents that differ.
    Verify(cli::verify::VerifyArgs),
    /// Print a projection's change log after a sequence, one JSON object per line.
    Changes(cli::changes::ChangesArgs),
    /// Forget a projection on every node sharing the store: drop all its generations' tables,
    /// registry entries and stored modules.
    Drop(cli::rebuild::DropArgs),
    /// Deploy a projection component to every node sharing the store, without a plugins folder:
    /// a new projection starts, a new module of one builds as a new generation, then swaps in.
    Deploy(cli::deploy::DeployArgs),
    /// Append one event to a stream; prints its global position.
    Append(cli::append::AppendArgs),
    /// Append events from a JSON-lines file, all or nothing. Each line:
    /// {"stream": "...", "type": "...", "payload": {...}, "metadata": {...}, "expected_version": N}
    Import(cli::append::ImportArgs),
    /// Print one document of a read model.
    Get(cli::read::GetArgs),
    /// Query a collection on its indexed fields; prints a JSON page.
    Query(cli::read::QueryArgs),
    /// Show each projection: version, generation, checkpoint, head, lag, state, last error.
    Status(cli::status::StatusArgs),
    /// Show each table sync source (`[sources.NAME]` in refract.toml): last tracking value,
    /// rows synced, last sync time, last error. `refract sources reset NAME` re-syncs one from the start.
    Sources(cli::sources::SourcesArgs),
    /// List the nodes holding projection leases (hosts sharing a store), with the generations each runs.
    Nodes(cli::status::NodesArgs),
    /// List the events a projection skipped (`on_failure = "skip"`), with their errors.
    DeadLetters(cli::dead_letters::DeadLettersArgs),
    /// Clear a projection's fault so the next `run` resumes from its checkpoint,
    /// and mark its dead letters to be replayed by the next `run` before new events.
    Retry(cli::dead_letters::RetryArgs),
    /// Pause a projection: no host runs it until `refract resume`, also across restarts.
    /// Works with a host running on the store (it stops the projection within a second) or without one.
    Pause(cli::admin::PauseArgs),
    /// Resume a paused projection from its checkpoint.
    Resume(cli::admin::PauseArgs),
    /// Move a projection's checkpoint to a position; the events after it are projected again
    /// on top of the documents as they are (`--to 0` empties the read model first).
    Reset(cli::admin::ResetArgs),
    /// Print events as JSON lines: one stream's (by version), or the whole log's (by position).
    Events(cli::events::EventsArgs),
    /// Make an API token: prints its `[[tokens]]` entry (the secret's SHA-256 only) on standard
    /// output and the secret, once, on standard error.
    Token(cli::token::TokenArgs),
    /// Wait until every active projection has committed the events up to a position
    /// (as `GET /ready`); exits non-zero naming the projections faulted or still behind.
    Wait(cli::wait::WaitArgs),
    /// Print a shell completion script, e.g. `refract completions bash > ~/.local/share/bash-completion/completions/refract`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `refract man > refract.1 && man ./refract.1`.
    Man,
    /// Print the effective settings of `refract run` (it takes the same flags) and where each
    /// value came from: flag, env, the config file's [host] table, or the default.
    Config(cli::config::ConfigArgs),
}

fn main() -> ExitCode {
    cli::allocator::tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "refract=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: logs piped to a file or a test stay greppable.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The config file's [host] values become the flags' defaults before parsing.
    let found = cli::settings::ConfigFile::find(&args, std::env::var_os(cli::settings::CONFIG_ENV));
    let (file, command) = match found.and_then(|file| Ok((file.apply(Cli::command())?, file)).map(|(c, f)| (f, c))) {
        Ok(found) => found,
        Err(e) => {
            errln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let matches = command.get_matches_from(&args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(dispatch(cli, Parsed { file, matches }));
    // Do not wait for blocking work still running: a host stopped during
    // start-up may be compiling a module it will never use, which can take
    // many seconds. Everything that must finish (commits, the API) has been
    // awaited by the command itself.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output has gone (`refract ... | head`): it has
        // what it wanted, so stop quietly, as ripgrep does.
        Err(e) if e.chain().any(|c| c.downcast_ref::<StdoutError>().is_some_and(StdoutError::is_broken_pipe)) => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            for line in cli::report::lines(&e) {
                errln!("{line}");
            }
            ExitCode::FAILURE
        }
    }
}

/// What `refract config` reports on besides the parsed arguments: the config
/// file, and the parser's view of where each value came from.
struct Parsed {
    file: cli::settings::ConfigFile,
    matches: clap::ArgMatches,
}

/// Runs the command. Only `run`, `dev`, `import` and `append` may create a
/// data dir; the others first check that there is one.
async fn dispatch(cli: Cli, parsed: Parsed) -> anyhow::Result<()> {
    let data = Stores::new(DataDir(cli.data_dir), cli.events, cli.store);
    // `new` touches only the plugins folder; the generated docs touch nothing.
    let may_create = matches!(
        cli.command,
        Command::Run(_)
            | Command::Dev(_)
            | Command::Import(_)
            | Command::Append(_)
            | Command::New(_)
            | Command::Token(_)
            | Command::Completions { .. }
            | Command::Man
            | Command::Config(_)
    );
    if !may_create {
        data.require_existing()?;
    }
    match cli.command {
        Command::Run(mut args) | Command::Dev(mut args) => {
            let (name, matches) = parsed.matches.subcommand().expect("a subcommand was parsed");
            args.settle(matches);
            cli::run::run(&data, args, parsed.file.config, name == "dev").await
        }
        Command::New(args) => cli::new::new(args),
        Command::Rebuild(args) => cli::rebuild::rebuild(&data, args, parsed.file.config).await,
        Command::Drop(args) => cli::rebuild::drop_projection(&data, args).await,
        Command::Deploy(args) => cli::deploy::deploy(&data, args, parsed.file.config).await,
        Command::Verify(args) => cli::verify::verify(&data, args).await,
        Command::Changes(args) => cli::changes::changes(&data, args).await,
        Command::Append(args) => cli::append::append(&data, args).await,
        Command::Import(args) => cli::append::import(&data, args).await,
        Command::Get(args) => cli::read::get(&data, args).await,
        Command::Query(args) => cli::read::query(&data, args).await,
        Command::Status(args) => cli::status::status(&data, args).await,
        Command::Nodes(args) => cli::status::nodes(&data, args).await,
        Command::Sources(args) => cli::sources::sources(&data, args, &parsed.file.config).await,
        Command::DeadLetters(args) => cli::dead_letters::dead_letters(&data, args).await,
        Command::Retry(args) => cli::dead_letters::retry(&data, args).await,
        Command::Wait(args) => cli::wait::wait(&data, args).await,
        Command::Pause(args) => cli::admin::pause(&data, args).await,
        Command::Resume(args) => cli::admin::resume(&data, args).await,
        Command::Reset(args) => cli::admin::reset(&data, args).await,
        Command::Events(args) => cli::events::events(&data, args).await,
        Command::Token(args) => cli::token::token(args),
        Command::Completions { shell } => cli::docs::completions(Cli::command(), shell),
        Command::Man => cli::docs::man(Cli::command()),
        Command::Config(args) => {
            let (_, matches) = parsed.matches.subcommand().expect("a subcommand was parsed");
            // The listing follows the declaration order, which setting defaults reorders.
            cli::config::print(args, &Cli::command(), matches, &parsed.file)
        }
    }
}
