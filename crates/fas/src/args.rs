//! fly-autoscaler's command line, parsed like the Go tool's (`flag` package): the commands
//! `serve` (the default), `eval` and `version`, the `-config PATH` option in its Go spellings,
//! and the usage texts and error messages word for word.

use std::path::PathBuf;

use crate::config;
use crate::error::{FasError, Result};

/// The top-level usage text (the Go tool's, with its commands).
pub const USAGE: &str = "\
fly-autoscaler is a metrics-based autoscaler for automatically scaling your
Fly Machines up. It continuously monitors external metrics to derive the
appropriate number of machines to run to handle the load.

This is fleetscale's drop-in replacement of superfly/fly-autoscaler: the same
FAS_* variables, YAML file, commands, logs and metrics.

Usage:

\tfly-autoscaler <command> [arguments]

The commands are:

\teval         collects metrics once and evaluates server count
\tserve        runs the autoscaler server process (the default)
\tversion      prints the version
";

const SERVE_USAGE: &str = "\
The serve command runs the autoscaler server process and begins managing a fleet
of Fly machines based on metrics.

Usage:

\tfly-autoscaler serve [arguments]

Arguments:
  -config string
    \tPath to config file
";

const EVAL_USAGE: &str = "\
The eval command runs collects metrics once and evaluates the given expression.
No scaling is performed. This command should be used for testing & debugging.

Usage:

\tfly-autoscaler eval [arguments]

Arguments:
  -config string
    \tPath to config file
";

/// `fly-autoscaler version`'s line: `fly-autoscaler <version>, commit=<commit>` as the Go
/// tool prints it (the commit comes from `FLEETSCALE_COMMIT` at build time).
pub fn version_string() -> String {
    format!(
        "fly-autoscaler {} (fleetscale), commit={}",
        env!("CARGO_PKG_VERSION"),
        option_env!("FLEETSCALE_COMMIT").unwrap_or("unknown")
    )
}

/// The top-level help: [`USAGE`], then every environment variable with what it is for.
pub fn help_text() -> String {
    let mut out = String::from(USAGE);
    out.push_str("\nEnvironment variables (a YAML file given with -config overrides them):\n\n");
    let width = config::ENV_VARIABLES
        .iter()
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(0);
    for (name, what) in config::ENV_VARIABLES {
        out.push_str(&format!("\t{name:<width$}  {what}\n"));
    }
    out.push_str(
        "\nEach command takes -config PATH; `fly-autoscaler <command> -h` shows it. \
         `fly-autoscaler version` (or --version) prints the version.\n",
    );
    out
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `serve [-config PATH]` (also the default).
    Serve {
        /// `-config`.
        config: Option<PathBuf>,
    },
    /// `eval [-config PATH]`.
    Eval {
        /// `-config`.
        config: Option<PathBuf>,
    },
    /// `version` (also `--version`, `-version`, `-v`).
    Version,
    /// Print this usage text and exit with status 0.
    Help(String),
}

/// Parses the arguments (without the program name) like the Go tool: a command, then Go
/// `flag`-style options (`-config PATH`, `-config=PATH`, `--config PATH`). With no command,
/// or options first, the command is `serve`.
///
/// # Errors
/// `fly-autoscaler X: unknown command`, `flag provided but not defined: -x`,
/// `flag needs an argument: -config`, `too many arguments`.
pub fn parse_args(args: &[String]) -> Result<Command> {
    let (cmd, rest) = match args.split_first() {
        None => ("serve", &args[..0]),
        Some((first, rest)) => match first.as_str() {
            "serve" | "eval" | "version" => (first.as_str(), rest),
            "--version" | "-version" | "-v" => return Ok(Command::Version),
            "help" | "-h" | "-help" | "--help" => return Ok(Command::Help(help_text())),
            f if f.starts_with('-') => ("serve", args),
            other => {
                return Err(FasError::Failed(format!(
                    "fly-autoscaler {other}: unknown command"
                )))
            }
        },
    };
    if cmd == "version" {
        return Ok(Command::Version);
    }
    let usage = if cmd == "eval" {
        EVAL_USAGE
    } else {
        SERVE_USAGE
    };
    let mut config = None;
    let mut i = 0;
    while i < rest.len() {
        let a = rest[i].as_str();
        if !a.starts_with('-') || a == "-" {
            return Err(FasError::Failed("too many arguments".into()));
        }
        if a == "--" {
            if i + 1 < rest.len() {
                return Err(FasError::Failed("too many arguments".into()));
            }
            break;
        }
        let name = a.trim_start_matches('-');
        let (name, inline) = match name.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (name, None),
        };
        match name {
            "h" | "help" => return Ok(Command::Help(usage.to_owned())),
            "config" => {
                let v = match inline {
                    Some(v) => v,
                    None => {
                        i += 1;
                        rest.get(i).cloned().ok_or_else(|| {
                            FasError::Failed("flag needs an argument: -config".into())
                        })?
                    }
                };
                config = Some(PathBuf::from(v));
            }
            other => {
                return Err(FasError::Failed(format!(
                    "flag provided but not defined: -{other}"
                )))
            }
        }
        i += 1;
    }
    Ok(if cmd == "eval" {
        Command::Eval { config }
    } else {
        Command::Serve { config }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn command_lines() {
        assert_eq!(
            parse_args(&args(&[])).unwrap(),
            Command::Serve { config: None }
        );
        assert_eq!(
            parse_args(&args(&["serve", "-config", "a.yml"])).unwrap(),
            Command::Serve {
                config: Some("a.yml".into())
            }
        );
        assert_eq!(
            parse_args(&args(&["eval", "--config=b.yml"])).unwrap(),
            Command::Eval {
                config: Some("b.yml".into())
            }
        );
        assert_eq!(
            parse_args(&args(&["-config", "c.yml"])).unwrap(),
            Command::Serve {
                config: Some("c.yml".into())
            }
        );
        assert_eq!(parse_args(&args(&["version"])).unwrap(), Command::Version);
        assert!(matches!(
            parse_args(&args(&["help"])).unwrap(),
            Command::Help(_)
        ));
        assert_eq!(
            parse_args(&args(&["eval", "-h"])).unwrap(),
            Command::Help(EVAL_USAGE.to_owned())
        );
        assert_eq!(parse_args(&args(&["--version"])).unwrap(), Command::Version);
        match parse_args(&args(&["--help"])).unwrap() {
            Command::Help(text) => {
                for (name, _) in config::ENV_VARIABLES {
                    assert!(text.contains(name), "{name} missing from --help");
                }
            }
            other => panic!("{other:?}"),
        }
        let e = |a: &[&str]| parse_args(&args(a)).unwrap_err().to_string();
        assert_eq!(e(&["scale"]), "fly-autoscaler scale: unknown command");
        assert_eq!(e(&["serve", "-x"]), "flag provided but not defined: -x");
        assert_eq!(e(&["serve", "-config"]), "flag needs an argument: -config");
        assert_eq!(e(&["eval", "extra"]), "too many arguments");
    }
}
