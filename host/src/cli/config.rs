//! `refract config`: the effective settings of `refract run` and where each
//! value came from, printed as a `[host]` table that can be pasted into
//! `refract.toml`.

use anyhow::Result;

use super::output::outln;
use super::run::RunArgs;
use super::settings::{ConfigFile, effective};

#[derive(clap::Args)]
pub struct ConfigArgs {
    /// The flags of `refract run`: their values are shown as that command would take them.
    #[command(flatten)]
    #[allow(dead_code)] // Parsed for the parser's sake: the values are read from its matches.
    run: RunArgs,
    /// Print JSON: {"file": PATH or null, "settings": [{"key", "value", "origin"}]}.
    #[arg(long)]
    json: bool,
}

/// Prints every setting with its value and origin.
pub fn print(args: ConfigArgs, cmd: &clap::Command, matches: &clap::ArgMatches, file: &ConfigFile) -> Result<()> {
    let settings = effective(cmd, matches, file);
    if args.json {
        let json = serde_json::json!({ "file": file.path, "settings": settings });
        outln!("{}", serde_json::to_string_pretty(&json)?)?;
        return Ok(());
    }
    match &file.path {
        Some(path) => outln!("# config file: {}", path.display())?,
        None => outln!("# no config file (./refract.toml does not exist; --config or REFRACT_CONFIG names one)")?,
    }
    outln!("[host]")?;
    let lines: Vec<(String, &str)> = settings
        .iter()
        .map(|s| match &s.value {
            Some(v) => (format!("{} = {}", s.key, toml_value(v)), s.origin.as_str()),
            None => (format!("# {} is unset", s.key), s.origin.as_str()),
        })
        .collect();
    let width = lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    for (line, origin) in lines {
        outln!("{line:<width$}  # {origin}")?;
    }
    Ok(())
}

/// A raw flag value as TOML: numbers and booleans bare, anything else quoted.
fn toml_value(raw: &str) -> String {
    if raw.parse::<i64>().is_ok() || raw == "true" || raw == "false" {
        raw.to_owned()
    } else {
        serde_json::Value::String(raw.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_as_toml() {
        assert_eq!(toml_value("100"), "100");
        assert_eq!(toml_value("true"), "true");
        assert_eq!(toml_value("127.0.0.1:7878"), "\"127.0.0.1:7878\"");
        assert_eq!(toml_value("a \"b\""), "\"a \\\"b\\\"\"");
    }
}
