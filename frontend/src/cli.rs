//! `tally-api keys create|list|revoke` (SPEC section 8): the API key lifecycle, against the
//! same `REDIS_URL` (and `POLICY_FILE`) as the server.

use std::process::ExitCode;

use crate::apikeys;
use crate::config::Config;
use crate::store::{Store, TypeIndex};

pub const USAGE: &str = "usage: tally-api keys create --tier TIER [--name NAME]\n       \
                         tally-api keys list\n       \
                         tally-api keys revoke ID_OR_NAME";

/// Runs `tally-api keys ARGS...` (`args` after `keys`); prints what it did, or why not.
pub async fn keys(config: &Config, args: &[String]) -> ExitCode {
    match run(config, args).await {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tally-api keys: {e}");
            ExitCode::from(2)
        }
    }
}

/// The parsed command line.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Create { tier: String, name: String },
    List,
    Revoke(String),
}

fn parse(args: &[String]) -> Result<Command, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["list"] => Ok(Command::List),
        ["revoke", what] => Ok(Command::Revoke(what.to_string())),
        ["create", rest @ ..] => {
            let (mut tier, mut name) = (None, None);
            let mut it = rest.iter();
            while let Some(flag) = it.next() {
                let value = it
                    .next()
                    .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
                match *flag {
                    "--tier" if tier.is_none() => tier = Some(value.to_string()),
                    "--name" if name.is_none() => name = Some(value.to_string()),
                    _ => return Err(format!("unexpected {flag:?}\n{USAGE}")),
                }
            }
            let tier = tier.ok_or_else(|| format!("--tier is required\n{USAGE}"))?;
            let name = name.unwrap_or_default();
            if name.len() > 256 || name.chars().any(char::is_control) {
                return Err("--name must be at most 256 bytes of printable text".into());
            }
            Ok(Command::Create { tier, name })
        }
        _ => Err(USAGE.to_string()),
    }
}

async fn run(config: &Config, args: &[String]) -> Result<String, String> {
    let command = parse(args)?;
    let store = Store::new(config, TypeIndex::new()).map_err(|e| e.to_string())?;
    match command {
        Command::Create { tier, name } => {
            let Some(file) = &config.policy_file else {
                return Err("POLICY_FILE is not set: a key's tier must be one of its tiers".into());
            };
            if file.tier(&tier).is_none() {
                let tiers: Vec<&str> = file.tiers.iter().map(|t| t.name.as_str()).collect();
                return Err(format!(
                    "tier {tier:?} is not in {} (tiers: {})",
                    file.path,
                    tiers.join(", ")
                ));
            }
            let (key, id) = apikeys::create(&store, &tier, &name).await?;
            Ok(format!(
                "{key}\nid {id}, tier {tier}{}: the key is shown only this once\n",
                if name.is_empty() {
                    String::new()
                } else {
                    format!(", name {name:?}")
                }
            ))
        }
        Command::List => {
            let mut out = String::from("id\tname\ttier\tcreated\n");
            for r in apikeys::list(&store).await? {
                let created = chrono::DateTime::from_timestamp_millis(r.created_ms)
                    .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
                out += &format!("{}\t{}\t{}\t{created}\n", r.id, r.name, r.tier);
            }
            Ok(out)
        }
        Command::Revoke(what) => {
            let id = apikeys::revoke(&store, &what).await?;
            Ok(format!("revoked {id}\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn the_command_line_is_parsed_strictly() {
        let create = |tier: &str, name: &str| Command::Create {
            tier: tier.into(),
            name: name.into(),
        };
        assert_eq!(parse(&args(&["list"])), Ok(Command::List));
        assert_eq!(
            parse(&args(&["revoke", "abc"])),
            Ok(Command::Revoke("abc".into()))
        );
        assert_eq!(
            parse(&args(&["create", "--tier", "pro"])),
            Ok(create("pro", ""))
        );
        assert_eq!(
            parse(&args(&["create", "--name", "ci", "--tier", "pro"])),
            Ok(create("pro", "ci"))
        );
        for bad in [
            &[][..],
            &["create"],
            &["create", "--tier"],
            &["create", "--tier", "a", "--tier", "b"],
            &["create", "--tier", "a", "--colour", "b"],
            &["list", "x"],
            &["revoke"],
            &["rotate", "x"],
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
