//! One config file for every flag: the `[host]` table of `refract.toml`.
//!
//! Each key of `[host]` is a flag of `refract run` (or a global flag such as
//! `data_dir`), spelt with underscores. Precedence is `flag > env > file >
//! default`, and it is decided by clap alone: the file's values become the
//! flags' defaults before the command line is parsed, so a value given on the
//! command line or in the flag's environment variable still wins, and the
//! file's values go through the same parsers as typed ones. Which of the four
//! a value came from is read back from clap ([`origin`]) for `refract config`.
//!
//! The file is found before parsing, the way the parser would find it:
//! `--config PATH`, else `REFRACT_CONFIG`, else `./refract.toml` when it
//! exists. The rest of the file (`[defaults]`, `[projections.*]`) is the
//! library's [`refract::Config`], read from the same text.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::ArgMatches;
use clap::builder::{ArgAction, ValueHint};
use clap::parser::ValueSource;

/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "REFRACT_CONFIG";
/// The file used when neither `--config` nor [`CONFIG_ENV`] names one.
pub const DEFAULT_FILE: &str = "refract.toml";

/// Arguments that are not settings: they cannot be set in the file.
const NOT_SETTINGS: &[&str] = &["help", "version", "config"];

/// The subcommands whose own flags the file can set: the host's.
const HOST_COMMANDS: &[&str] = &["run", "dev", "config"];

/// The config file as found, and what it says.
#[derive(Default)]
pub struct ConfigFile {
    /// Where it is; `None` when there is none (no `./refract.toml`).
    pub path: Option<PathBuf>,
    /// Its `[host]` table.
    host: toml::Table,
    /// Everything else: sandbox limits and policies per projection.
    pub config: refract::Config,
}

/// The part of the file that is the binary's, not the library's.
#[derive(serde::Deserialize)]
struct HostTable {
    #[serde(default)]
    host: toml::Table,
}

/// Where a setting's value came from, strongest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Given on the command line.
    Flag(String),
    /// From the flag's environment variable.
    Env(String),
    /// From the config file's `[host]` table.
    File(PathBuf),
    /// Built in.
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Flag(long) => write!(f, "flag --{long}"),
            Self::Env(name) => write!(f, "env {name}"),
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Default => f.write_str("default"),
        }
    }
}

impl ConfigFile {
    /// Finds and reads the config file for the command line `args` (as
    /// `std::env::args_os`, program name first) and the config variable's value.
    pub fn find(args: &[OsString], env: Option<OsString>) -> Result<Self> {
        let named = flag_value(args, "--config").or(env.filter(|v| !v.is_empty())).map(PathBuf::from);
        let path = match named {
            Some(path) => path,
            None if Path::new(DEFAULT_FILE).is_file() => PathBuf::from(DEFAULT_FILE),
            None => return Ok(Self::default()),
        };
        let text = std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        Self::parse(path, &text)
    }

    fn parse(path: PathBuf, text: &str) -> Result<Self> {
        let invalid = |reason: String| anyhow::anyhow!("{}: {reason}", path.display());
        let config = refract::Config::parse(text).map_err(invalid)?;
        let HostTable { host } = toml::from_str(text).map_err(|e| invalid(e.to_string().trim_end().to_owned()))?;
        Ok(Self { path: Some(path), host, config })
    }

    /// Makes the file's `[host]` values the defaults of the matching flags
    /// of `cmd`: the global ones and those of the host's commands. A key
    /// that names no such flag, or a value of the wrong kind or that the
    /// flag's parser refuses, fails here, naming the file and the key.
    pub fn apply(&self, mut cmd: clap::Command) -> Result<clap::Command> {
        let Some(path) = &self.path else { return Ok(cmd) };
        let known = settings(&cmd);
        for (key, value) in &self.host {
            let Some((own, arg)) = known.iter().find(|(_, arg)| arg.get_id() == key.as_str()) else {
                let names: Vec<&str> = known.iter().map(|(_, a)| a.get_id().as_str()).collect();
                bail!("{}: unknown key `{key}` in [host]; the keys are: {}", path.display(), names.join(", "));
            };
            // A list (`cors_origins = ["a", "b"]`) gives a flag that takes several values each one.
            let values = match value {
                toml::Value::Array(items) if matches!(arg.get_action(), ArgAction::Append) => items.clone(),
                _ => vec![value.clone()],
            };
            let mut texts = Vec::new();
            for value in &values {
                let text = self.value_text(path, key, value, arg)?;
                check(path, key, &text, arg)?;
                texts.push(text);
            }
            let set = |a: clap::Arg| a.default_values(texts.clone());
            if !*own {
                cmd = cmd.mut_arg(key, set);
                continue;
            }
            for sub in HOST_COMMANDS {
                if cmd.find_subcommand(sub).is_some() {
                    cmd = cmd.mut_subcommand(sub, |s| s.mut_arg(key, set));
                }
            }
        }
        Ok(cmd)
    }

    /// The value as the flag's parser reads it. Relative paths are taken
    /// relative to the file's folder, so `--config /etc/refract/refract.toml`
    /// means the same wherever it is run from.
    fn value_text(&self, path: &Path, key: &str, value: &toml::Value, arg: &clap::Arg) -> Result<String> {
        let is_flag = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let text = match value {
            toml::Value::Boolean(b) if is_flag => b.to_string(),
            _ if is_flag => bail!("{}: [host] {key} must be true or false", path.display()),
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Array(_) if matches!(arg.get_action(), ArgAction::Append) => {
                bail!("{}: [host] {key} must be a list of strings or numbers", path.display())
            }
            _ => bail!("{}: [host] {key} must be a string or a number", path.display()),
        };
        let is_path = matches!(arg.get_value_hint(), ValueHint::AnyPath | ValueHint::DirPath | ValueHint::FilePath);
        if is_path && Path::new(&text).is_relative() {
            let base = path.parent().filter(|p| !p.as_os_str().is_empty());
            if let Some(base) = base {
                return Ok(base.join(&text).to_string_lossy().into_owned());
            }
        }
        Ok(text)
    }
}

/// Every argument the file may set, with whether it is one of `run`'s own
/// (`dev` and `config` take the same) rather than a global one.
fn settings(cmd: &clap::Command) -> Vec<(bool, clap::Arg)> {
    let wanted = |a: &&clap::Arg| !NOT_SETTINGS.contains(&a.get_id().as_str()) && a.get_long().is_some();
    let mut out: Vec<_> = cmd.get_arguments().filter(wanted).map(|a| (false, a.clone())).collect();
    if let Some(run) = cmd.find_subcommand("run") {
        let own = run.get_arguments().filter(wanted).filter(|a| !a.is_global_set());
        out.extend(own.map(|a| (true, a.clone())));
    }
    out
}

/// Runs one value through the flag's own parser, so a bad value in the file
/// is reported against the file and not as if it had been typed.
fn check(path: &Path, key: &str, text: &str, arg: &clap::Arg) -> Result<()> {
    let long = arg.get_long().unwrap_or(key).to_owned();
    let probe = clap::Arg::new("value")
        .long(long.clone())
        .value_parser(arg.get_value_parser().clone())
        .action(arg.get_action().clone());
    let probe_cmd = clap::Command::new("refract").no_binary_name(true).arg(probe);
    let mut argv = vec![format!("--{long}")];
    if !matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
        argv.push(text.to_owned());
    } else if text != "true" {
        return Ok(());
    }
    probe_cmd.try_get_matches_from(argv).map(drop).map_err(|e| {
        let why = e.to_string();
        let why = why.lines().next().unwrap_or_default().trim_start_matches("error: ").to_owned();
        anyhow::anyhow!("{}: [host] {key}: {why}", path.display())
    })
}

/// The value following `flag` (`--flag VALUE` or `--flag=VALUE`), before `--`.
fn flag_value(args: &[OsString], flag: &str) -> Option<OsString> {
    let mut found = None;
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        let Some(text) = arg.to_str() else { continue };
        if text == "--" {
            break;
        }
        if text == flag {
            found = rest.next().cloned();
        } else if let Some(value) = text.strip_prefix(flag).and_then(|t| t.strip_prefix('=')) {
            found = Some(value.into());
        }
    }
    found
}

/// Where the value of the argument `id` came from.
pub fn origin(matches: &ArgMatches, file: &ConfigFile, id: &str, arg: &clap::Arg) -> Origin {
    match matches.value_source(id) {
        Some(ValueSource::CommandLine) => Origin::Flag(arg.get_long().unwrap_or(id).to_owned()),
        Some(ValueSource::EnvVariable) => {
            Origin::Env(arg.get_env().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default())
        }
        _ => match &file.path {
            Some(path) if file.host.contains_key(id) => Origin::File(path.clone()),
            _ => Origin::Default,
        },
    }
}

/// One line of `refract config`: a setting, its value and where it came from.
#[derive(Debug, serde::Serialize)]
pub struct Effective {
    /// The key, as written in `[host]`.
    pub key: String,
    /// The value as the flag reads it; `None` when unset.
    pub value: Option<String>,
    /// Where it came from (`flag --x`, `env X`, `file PATH`, `default`).
    pub origin: String,
}

/// Every setting of the host with its effective value, read from the
/// matches of `refract config` (which takes the same flags as `refract run`;
/// clap propagates the global ones into them, with their sources).
pub fn effective(cmd: &clap::Command, matches: &ArgMatches, file: &ConfigFile) -> Vec<Effective> {
    settings(cmd)
        .into_iter()
        .map(|(_, arg)| {
            let id = arg.get_id().as_str();
            let value = matches
                .get_raw(id)
                .map(|vals| vals.map(|v| v.to_string_lossy().into_owned()).collect::<Vec<_>>().join(","));
            Effective { key: id.to_owned(), value, origin: origin(matches, file, id, &arg).to_string() }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_config_flag_is_found_before_parsing() {
        assert_eq!(flag_value(&os(&["refract", "run", "--config", "a.toml"]), "--config"), Some("a.toml".into()));
        assert_eq!(flag_value(&os(&["refract", "--config=b.toml", "status"]), "--config"), Some("b.toml".into()));
        assert_eq!(flag_value(&os(&["refract", "run"]), "--config"), None);
        assert_eq!(flag_value(&os(&["refract", "append", "--", "--config", "x"]), "--config"), None);
        // The last one wins, as it does for clap.
        assert_eq!(flag_value(&os(&["refract", "--config", "a", "--config", "b"]), "--config"), Some("b".into()));
    }

    fn cmd() -> clap::Command {
        clap::Command::new("refract")
            .arg(
                clap::Arg::new("data_dir")
                    .long("data-dir")
                    .global(true)
                    .value_parser(clap::value_parser!(PathBuf))
                    .default_value("data"),
            )
            .subcommand(
                clap::Command::new("run")
                    .arg(
                        clap::Arg::new("batch_size")
                            .long("batch-size")
                            .env("REFRACT_TEST_BATCH_SIZE_UNSET")
                            .value_parser(clap::value_parser!(usize))
                            .default_value("1000"),
                    )
                    .arg(clap::Arg::new("no_http").long("no-http").action(ArgAction::SetTrue)),
            )
    }

    fn file(text: &str) -> ConfigFile {
        ConfigFile::parse(PathBuf::from("conf/refract.toml"), text).unwrap()
    }

    #[test]
    fn file_values_become_defaults_and_flags_still_win() {
        let f = file("[host]\nbatch_size = 7\nno_http = true\ndata_dir = \"d\"\n");
        let c = f.apply(cmd()).unwrap();
        let m = c.clone().try_get_matches_from(["refract", "run"]).unwrap();
        let (_, run) = m.subcommand().unwrap();
        assert_eq!(run.get_one::<usize>("batch_size"), Some(&7));
        assert_eq!(run.get_one::<bool>("no_http"), Some(&true));
        // Relative to the file's folder.
        assert_eq!(run.get_one::<PathBuf>("data_dir"), Some(&PathBuf::from("conf/d")));
        let arg =
            c.find_subcommand("run").unwrap().get_arguments().find(|a| a.get_id() == "batch_size").unwrap().clone();
        assert_eq!(origin(run, &f, "batch_size", &arg), Origin::File("conf/refract.toml".into()));

        let m = c.try_get_matches_from(["refract", "run", "--batch-size", "9"]).unwrap();
        let (_, run) = m.subcommand().unwrap();
        assert_eq!(run.get_one::<usize>("batch_size"), Some(&9));
        assert_eq!(origin(run, &f, "batch_size", &arg), Origin::Flag("batch-size".into()));
    }

    #[test]
    fn mistakes_in_the_file_name_the_key() {
        let e = file("[host]\nbatch_sise = 7\n").apply(cmd()).unwrap_err().to_string();
        assert!(
            e.starts_with("conf/refract.toml: unknown key `batch_sise` in [host]; the keys are: data_dir, batch_size"),
            "{e}"
        );
        let e = file("[host]\nbatch_size = \"lots\"\n").apply(cmd()).unwrap_err().to_string();
        assert!(e.starts_with("conf/refract.toml: [host] batch_size: invalid value 'lots' for '--batch-size"), "{e}");
        let e = file("[host]\nno_http = 1\n").apply(cmd()).unwrap_err().to_string();
        assert_eq!(e, "conf/refract.toml: [host] no_http must be true or false");
        let e = file("[host]\nbatch_size = [1]\n").apply(cmd()).unwrap_err().to_string();
        assert_eq!(e, "conf/refract.toml: [host] batch_size must be a string or a number");
    }

    #[test]
    fn no_file_changes_nothing() {
        let c = ConfigFile::default().apply(cmd()).unwrap();
        let m = c.try_get_matches_from(["refract", "run"]).unwrap();
        let (_, run) = m.subcommand().unwrap();
        assert_eq!(run.get_one::<usize>("batch_size"), Some(&1000));
    }
}
