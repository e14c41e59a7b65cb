//! `refract token`: a new API token. The secret is printed once, on
//! standard error; standard output gets the `[[tokens]]` entry with only
//! its SHA-256, ready to append to refract.toml or a tokens file.

use anyhow::{Context, Result, bail};
use refract::Scope;

use super::output::{errln, outln};

#[derive(clap::Args)]
pub struct TokenArgs {
    /// A name for the token (who or what uses it), shown in the logs.
    name: String,
    /// What it may do: read, append or admin. Repeat for several.
    #[arg(long = "scope", required = true, value_parser = parse_scope)]
    scopes: Vec<Scope>,
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    Scope::parse(s).ok_or_else(|| format!("`{s}` is not a scope: use read, append or admin"))
}

/// Bytes of randomness in a secret: 256 bits.
const SECRET_BYTES: usize = 32;

/// Generates a secret and prints its entry.
pub fn token(TokenArgs { name, mut scopes }: TokenArgs) -> Result<()> {
    if name.is_empty() || name.contains(['"', '\\', '\n']) {
        bail!("a token name must be non-empty, without quotes, backslashes or newlines");
    }
    scopes.sort();
    scopes.dedup();
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).context("reading the system's random source")?;
    let secret: String = std::iter::once("rft_".to_owned()).chain(bytes.iter().map(|b| format!("{b:02x}"))).collect();
    let list = scopes.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
    outln!("[[tokens]]\nname = \"{name}\"\nscopes = [{list}]\nsha256 = \"{}\"", refract::token_hash(&secret))?;
    errln!("{secret}");
    Ok(())
}
