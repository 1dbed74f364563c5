//! Questions on the terminal: confirmations for destructive commands (refused without a terminal
//! unless `--yes`, so a script never deletes by accident) and passwords read without echo.

use std::io::{BufRead, IsTerminal, Write};

use super::client::ClientError;

/// Whether stdin is a terminal someone can answer on.
pub fn interactive() -> bool {
    std::io::stdin().is_terminal()
}

/// `yes` (the `--yes` flag), or the operator's answer to `question`. Without a terminal and
/// without `--yes` it is a usage error (exit 2) that names the flag.
pub fn confirm(question: &str, yes: bool) -> anyhow::Result<bool> {
    if yes {
        return Ok(true);
    }
    if !interactive() {
        return Err(ClientError::Usage(format!(
            "{question}\nNot asking without a terminal: pass --yes to confirm"
        ))
        .into());
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// A line typed after `prompt` (on stderr); empty is a usage error.
pub fn line(prompt: &str) -> anyhow::Result<String> {
    eprint!("{prompt}: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let line = line.trim().to_string();
    if line.is_empty() {
        return Err(ClientError::Usage(format!("{prompt} is required")).into());
    }
    Ok(line)
}

/// A password typed after `prompt` without echo on a terminal; piped stdin is read as a line
/// (for scripts), never echoed either.
pub fn password(prompt: &str) -> anyhow::Result<String> {
    let typed = if interactive() {
        rpassword::prompt_password(format!("{prompt}: "))?
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if typed.is_empty() {
        return Err(ClientError::Usage(format!("{prompt} is required")).into());
    }
    Ok(typed)
}

/// A new password, typed twice on a terminal until both match.
pub fn new_password(prompt: &str) -> anyhow::Result<String> {
    loop {
        let first = password(prompt)?;
        if !interactive() {
            return Ok(first);
        }
        let second = password("Confirm password")?;
        if first == second {
            return Ok(first);
        }
        eprintln!("The passwords do not match; try again.");
    }
}
