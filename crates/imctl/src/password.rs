//! Reading a password for `imctl user create --password` and `imctl user
//! password`: hidden and asked twice on a terminal, one line from stdin
//! otherwise (scripts: `printf '%s\n' "$PASSWORD" | imctl user password alice`).
//! Never from an argument, where it would stay in the shell's history and
//! in `ps`.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, bail};

/// A password for `user`, as typed or piped in.
pub fn read(user: &str) -> anyhow::Result<String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("password for {user}: ")).context("reading the password")?;
        let again = rpassword::prompt_password("the same again: ").context("reading the password")?;
        if first != again {
            bail!("the two passwords differ: nothing was changed");
        }
        first
    } else {
        from_lines(std::io::stdin().lock())?
    };
    if password.is_empty() {
        bail!("no password given: type one, or pipe it in as one line");
    }
    Ok(password)
}

/// The first line of `input`, without its line ending.
fn from_lines(mut input: impl BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    input.read_line(&mut line).context("reading the password from stdin")?;
    Ok(line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(&line).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_is_the_password_without_its_line_ending() {
        assert_eq!(from_lines(&b"correct horse\nsecond line\n"[..]).unwrap(), "correct horse");
        assert_eq!(from_lines(&b"correct horse\r\n"[..]).unwrap(), "correct horse");
        assert_eq!(from_lines(&b" spaces kept \n"[..]).unwrap(), " spaces kept ");
        assert_eq!(from_lines(&b"no newline"[..]).unwrap(), "no newline");
        assert_eq!(from_lines(&b""[..]).unwrap(), "");
    }
}
