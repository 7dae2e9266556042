//! HAProxy 2.6's tokenising of a config line, and its conditional blocks.
//!
//! A line is split into words at unquoted spaces and tabs; `#` outside
//! quotes starts a comment. As HAProxy does (checked against 2.6.12):
//!
//! * `'...'` quotes everything literally (no escapes, no variables);
//! * `"..."` keeps spaces and expands environment variables: `$NAME`,
//!   `${NAME}`, `${NAME-default}` and `${NAME[*]}` (the value split into
//!   several words at spaces); an unset variable is empty;
//! * outside single quotes a backslash escapes a space, `#`, `\`, `'` or
//!   `"`, and `\r`, `\n`, `\t`, `\xHH` are those bytes; before any other
//!   character the backslash stays;
//! * `$` outside double quotes is literal;
//! * quotes join with what touches them: `"x"'y'z` is one word `xyz`.
//!
//! Conditional blocks `.if`/`.elif`/`.else`/`.endif` (nested) keep or skip
//! lines; a condition is `0`, `1` (any integer: non-zero is true),
//! `defined(NAME)`, `feature(NAME)`, `streq(a,b)`, `strneq(a,b)`,
//! `version_atleast(x)`, `version_before(x)`, combined with `!`, `&&`,
//! `||` and parentheses. The version compared is [`HAPROXY_VERSION`].
//! `.diag`, `.notice` and `.warning` print a message (a warning here);
//! `.alert` is an error.
//!
//! Lines are bytes: a NUL byte, text that is not UTF-8 or a line longer
//! than [`MAX_LINE`] is an error naming the line (a binary file gives a
//! few errors, then [`MAX_ERRORS_PER_FILE`] stops it).

use std::collections::HashMap;

use super::{Diags, Loc};

/// The HAProxy version lbd's reader behaves as (`version_atleast`,
/// `version_before`): Debian 12's, which the tests compare lbd with.
pub const HAPROXY_VERSION: &str = "2.6.12";

/// Longest accepted line, in bytes.
pub const MAX_LINE: usize = 64 * 1024;
/// Most words on a line (HAProxy's `MAX_LINE_ARGS`).
pub const MAX_WORDS: usize = 64;
/// After this many errors in one file the rest of it is not read.
pub const MAX_ERRORS_PER_FILE: usize = 20;

/// Looks an environment variable up.
type Lookup = dyn Fn(&str) -> Option<String>;

/// Environment variables as the reader sees them: the process environment
/// (or a given map, in tests) with `setenv`/`presetenv`/`unsetenv` of the
/// `global` section on top.
pub struct Env {
    base: Box<Lookup>,
    overlay: HashMap<String, Option<String>>,
}

impl Env {
    /// The process environment.
    pub fn process() -> Self {
        Env::with(|name| std::env::var(name).ok())
    }

    /// Variables looked up with `lookup`.
    pub fn with(lookup: impl Fn(&str) -> Option<String> + 'static) -> Self {
        Env {
            base: Box::new(lookup),
            overlay: HashMap::new(),
        }
    }

    pub fn get(&self, name: &str) -> Option<String> {
        match self.overlay.get(name) {
            Some(value) => value.clone(),
            None => (self.base)(name),
        }
    }

    pub fn set(&mut self, name: &str, value: Option<String>) {
        self.overlay.insert(name.to_owned(), value);
    }
}

/// One meaningful line: where it is and its words (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub loc: Loc,
    pub words: Vec<String>,
}

/// An open `.if` block.
struct Block {
    loc: Loc,
    /// Lines of the current branch are kept.
    active: bool,
    /// A branch of this block was taken already (later `.elif`/`.else` are
    /// skipped).
    taken: bool,
    /// The enclosing blocks keep their lines.
    outer_active: bool,
    /// `.else` was seen.
    in_else: bool,
}

/// The lines of one file, tokenised, with conditional blocks applied.
pub struct FileLexer<'a> {
    file: std::sync::Arc<str>,
    rest: &'a [u8],
    line_no: usize,
    blocks: Vec<Block>,
    errors_at_start: usize,
    gave_up: bool,
}

impl<'a> FileLexer<'a> {
    pub fn new(file: std::sync::Arc<str>, bytes: &'a [u8], diags: &Diags) -> Self {
        FileLexer {
            file,
            rest: bytes,
            line_no: 0,
            blocks: Vec::new(),
            errors_at_start: diags.errors.len(),
            gave_up: false,
        }
    }

    fn loc(&self) -> Loc {
        Loc {
            file: self.file.clone(),
            line: self.line_no,
        }
    }

    /// The next line to interpret, or `None` at the end of the file.
    /// Problems go to `diags`; the line they are on is skipped.
    pub fn next_line(&mut self, env: &Env, diags: &mut Diags) -> Option<Line> {
        loop {
            if self.gave_up {
                return None;
            }
            if diags.errors.len() - self.errors_at_start >= MAX_ERRORS_PER_FILE {
                self.gave_up = true;
                diags.error(
                    Some(self.loc()),
                    format!(
                        "too many errors ({MAX_ERRORS_PER_FILE}); the rest of the file is not read"
                    ),
                );
                return None;
            }
            if self.rest.is_empty() {
                for block in self.blocks.drain(..).rev() {
                    diags.error(
                        Some(block.loc),
                        "'.if' without a matching '.endif' before the end of the file",
                    );
                }
                return None;
            }
            let (raw, rest) = match self.rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
                None => (self.rest, &[][..]),
            };
            self.rest = rest;
            self.line_no += 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let loc = self.loc();
            if raw.len() > MAX_LINE {
                diags.error(
                    Some(loc),
                    format!("line too long ({} bytes; at most {MAX_LINE})", raw.len()),
                );
                continue;
            }
            if let Some(at) = raw.iter().position(|&b| b == 0) {
                diags.error(
                    Some(loc),
                    format!(
                        "stray NUL character at position {} (a binary file?)",
                        at + 1
                    ),
                );
                continue;
            }
            let Ok(text) = std::str::from_utf8(raw) else {
                diags.error(Some(loc), "the line is not UTF-8 text (a binary file?)");
                continue;
            };
            let active = self.blocks.last().is_none_or(|b| b.active);
            let trimmed = text.trim_start_matches([' ', '\t']);
            if !active && !trimmed.starts_with('.') {
                continue;
            }
            let words = match tokenize(text, env) {
                Ok(words) => words,
                Err(reason) => {
                    if active {
                        diags.error(Some(loc), reason);
                    }
                    continue;
                }
            };
            let Some(first) = words.first() else { continue };
            if first.starts_with('.') && self.directive(&words, &loc, env, diags) {
                continue;
            }
            if !active {
                continue;
            }
            if words.len() > MAX_WORDS {
                diags.error(
                    Some(loc),
                    format!(
                        "too many words on the line ({}; at most {MAX_WORDS})",
                        words.len()
                    ),
                );
                continue;
            }
            return Some(Line { loc, words });
        }
    }

    /// Handles a `.if`-family or message directive; false if `words` is
    /// not one (a keyword that happens to start with a dot).
    fn directive(&mut self, words: &[String], loc: &Loc, env: &Env, diags: &mut Diags) -> bool {
        let active = self.blocks.last().is_none_or(|b| b.active);
        let args = &words[1..];
        match words[0].as_str() {
            ".if" => {
                let value = if active {
                    self.condition(".if", args, loc, env, diags)
                } else {
                    false
                };
                self.blocks.push(Block {
                    loc: loc.clone(),
                    active: active && value,
                    taken: value,
                    outer_active: active,
                    in_else: false,
                });
            }
            ".elif" => {
                let Some(top) = self.blocks.last() else {
                    diags.error(Some(loc.clone()), "'.elif' without a matching '.if'");
                    return true;
                };
                if top.in_else {
                    diags.error(Some(loc.clone()), "'.elif' after '.else'");
                    return true;
                }
                let (outer, taken) = (top.outer_active, top.taken);
                let value = outer && !taken && self.condition(".elif", args, loc, env, diags);
                if let Some(top) = self.blocks.last_mut() {
                    top.active = value;
                    top.taken |= value;
                }
            }
            ".else" => {
                let Some(top) = self.blocks.last_mut() else {
                    diags.error(Some(loc.clone()), "'.else' without a matching '.if'");
                    return true;
                };
                if top.in_else {
                    diags.error(
                        Some(loc.clone()),
                        "a second '.else' in the same '.if' block",
                    );
                    return true;
                }
                top.in_else = true;
                top.active = top.outer_active && !top.taken;
                top.taken = true;
                if !args.is_empty() {
                    diags.error(Some(loc.clone()), "'.else' takes no argument");
                }
            }
            ".endif" => {
                if self.blocks.pop().is_none() {
                    diags.error(Some(loc.clone()), "'.endif' without a matching '.if'");
                } else if !args.is_empty() {
                    diags.error(Some(loc.clone()), "'.endif' takes no argument");
                }
            }
            ".diag" | ".notice" | ".warning" | ".alert" if active => {
                let keyword = &words[0];
                if args.len() != 1 {
                    diags.error(
                        Some(loc.clone()),
                        format!(
                            "'{keyword}' takes exactly one argument (quote a message with spaces), got {}",
                            args.len()
                        ),
                    );
                } else if keyword == ".alert" {
                    diags.error(Some(loc.clone()), format!("'{}'", args[0]));
                } else {
                    diags.warn(Some(loc.clone()), format!("'{}'", args[0]));
                }
            }
            ".diag" | ".notice" | ".warning" | ".alert" => {}
            _ => return false,
        }
        true
    }

    fn condition(
        &self,
        keyword: &str,
        args: &[String],
        loc: &Loc,
        env: &Env,
        diags: &mut Diags,
    ) -> bool {
        if args.is_empty() {
            diags.error(Some(loc.clone()), format!("'{keyword}' needs a condition"));
            return false;
        }
        match evaluate(&args.join(" "), env) {
            Ok(value) => value,
            Err(reason) => {
                diags.error(
                    Some(loc.clone()),
                    format!("'{keyword}': cannot evaluate the condition: {reason}"),
                );
                false
            }
        }
    }
}

/// Splits one line into words (see the module docs); `Err` says why the
/// line is malformed.
pub fn tokenize(line: &str, env: &Env) -> Result<Vec<String>, String> {
    #[derive(PartialEq, Clone, Copy)]
    enum Quote {
        None,
        Single,
        Double,
    }
    let bytes = line.as_bytes();
    let mut words: Vec<Vec<u8>> = Vec::new();
    let mut word: Vec<u8> = Vec::new();
    let mut in_word = false;
    let mut quote = Quote::None;
    let mut quote_at = 0;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match (quote, c) {
            (Quote::Single, b'\'') => quote = Quote::None,
            (Quote::Single, _) => word.push(c),
            (Quote::None, b' ' | b'\t') => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (Quote::None, b'#') => break,
            (Quote::None, b'\'') => {
                quote = Quote::Single;
                quote_at = i;
                in_word = true;
            }
            (Quote::None, b'"') => {
                quote = Quote::Double;
                quote_at = i;
                in_word = true;
            }
            (Quote::Double, b'"') => quote = Quote::None,
            (_, b'\\') => {
                in_word = true;
                match bytes.get(i + 1) {
                    Some(&e @ (b' ' | b'#' | b'\\' | b'\'' | b'"')) => {
                        word.push(e);
                        i += 1;
                    }
                    Some(b'r') => {
                        word.push(b'\r');
                        i += 1;
                    }
                    Some(b'n') => {
                        word.push(b'\n');
                        i += 1;
                    }
                    Some(b't') => {
                        word.push(b'\t');
                        i += 1;
                    }
                    Some(b'x') => {
                        let hex = bytes.get(i + 2..i + 4).and_then(|h| {
                            std::str::from_utf8(h)
                                .ok()
                                .and_then(|h| u8::from_str_radix(h, 16).ok())
                        });
                        match hex {
                            Some(byte) => {
                                word.push(byte);
                                i += 3;
                            }
                            None => {
                                return Err(format!(
                                    "invalid or incomplete '\\x' sequence at position {}",
                                    i + 1
                                ))
                            }
                        }
                    }
                    _ => word.push(b'\\'),
                }
            }
            (Quote::Double, b'$') => {
                let (consumed, value, split) = expand_variable(&line[i..], i, env)?;
                i += consumed;
                if split {
                    let mut parts = value.split(' ').filter(|p| !p.is_empty());
                    if let Some(first) = parts.next() {
                        word.extend_from_slice(first.as_bytes());
                    }
                    for part in parts {
                        words.push(std::mem::take(&mut word));
                        word.extend_from_slice(part.as_bytes());
                    }
                } else {
                    word.extend_from_slice(value.as_bytes());
                }
                continue;
            }
            (_, _) => {
                in_word = true;
                word.push(c);
            }
        }
        i += 1;
    }
    if quote != Quote::None {
        return Err(format!("unmatched quote at position {}", quote_at + 1));
    }
    if in_word {
        words.push(word);
    }
    words
        .into_iter()
        .map(|w| {
            String::from_utf8(w)
                .map_err(|_| "a '\\x' escape makes a word that is not UTF-8 text".to_owned())
        })
        .collect()
}

/// Expands the variable at the start of `text` (which starts with `$`):
/// returns the bytes consumed, the value and whether it is split into
/// words (`${NAME[*]}`).
fn expand_variable(text: &str, at: usize, env: &Env) -> Result<(usize, String, bool), String> {
    let name_start = |c: char| c.is_ascii_alphabetic() || c == '_';
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let rest = &text[1..];
    if let Some(inner) = rest.strip_prefix('{') {
        let Some(end) = inner.find('}') else {
            return Err(format!(
                "unmatched brace in environment variable name at position {}",
                at + 2
            ));
        };
        let body = &inner[..end];
        let name_len = body.find(|c: char| !name_char(c)).unwrap_or(body.len());
        let (name, tail) = body.split_at(name_len);
        if !name.starts_with(name_start) {
            return Err(format!(
                "forbidden first char in environment variable name at position {}",
                at + 3
            ));
        }
        let consumed = 1 + 1 + end + 1;
        let value = env.get(name);
        match tail {
            "" => Ok((consumed, value.unwrap_or_default(), false)),
            "[*]" => Ok((consumed, value.unwrap_or_default(), true)),
            _ => match tail.strip_prefix('-') {
                Some(default) => Ok((consumed, value.unwrap_or_else(|| default.to_owned()), false)),
                None => Err(format!(
                    "unexpected {tail:?} in environment variable ${{{body}}} at position {}",
                    at + 1
                )),
            },
        }
    } else {
        if !rest.starts_with(name_start) {
            return Err(format!(
                "forbidden first char in environment variable name at position {}",
                at + 2
            ));
        }
        let len = rest.find(|c: char| !name_char(c)).unwrap_or(rest.len());
        Ok((1 + len, env.get(&rest[..len]).unwrap_or_default(), false))
    }
}

// ------------------------------------------------------------- conditions

/// Evaluates a `.if` condition.
pub fn evaluate(text: &str, env: &Env) -> Result<bool, String> {
    let mut parser = CondParser {
        text: text.as_bytes(),
        pos: 0,
        env,
    };
    let value = parser.or()?;
    parser.skip_spaces();
    if parser.pos != parser.text.len() {
        return Err(format!("unexpected {:?}", &text[parser.pos..]));
    }
    Ok(value)
}

struct CondParser<'a> {
    text: &'a [u8],
    pos: usize,
    env: &'a Env,
}

impl CondParser<'_> {
    fn skip_spaces(&mut self) {
        while self
            .text
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_whitespace())
        {
            self.pos += 1;
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_spaces();
        if self.text[self.pos..].starts_with(token.as_bytes()) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<bool, String> {
        let mut value = self.and()?;
        while self.eat("||") {
            let right = self.and()?;
            value = value || right;
        }
        Ok(value)
    }

    fn and(&mut self) -> Result<bool, String> {
        let mut value = self.unary()?;
        while self.eat("&&") {
            let right = self.unary()?;
            value = value && right;
        }
        Ok(value)
    }

    fn unary(&mut self) -> Result<bool, String> {
        if self.eat("!") {
            return Ok(!self.unary()?);
        }
        if self.eat("(") {
            let value = self.or()?;
            if !self.eat(")") {
                return Err("missing ')'".to_owned());
            }
            return Ok(value);
        }
        self.term()
    }

    fn term(&mut self) -> Result<bool, String> {
        self.skip_spaces();
        let start = self.pos;
        while self
            .text
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
        {
            self.pos += 1;
        }
        let word = String::from_utf8_lossy(&self.text[start..self.pos]).into_owned();
        if word.is_empty() {
            return Err(match self.text.get(self.pos) {
                Some(_) => format!(
                    "unexpected {:?}",
                    String::from_utf8_lossy(&self.text[self.pos..])
                ),
                None => "a term is missing at the end".to_owned(),
            });
        }
        if self.text.get(self.pos) != Some(&b'(') {
            return word
                .parse::<i64>()
                .map(|n| n != 0)
                .map_err(|_| format!("unknown term {word:?}"));
        }
        self.pos += 1;
        let close = self.text[self.pos..]
            .iter()
            .position(|&c| c == b')')
            .ok_or_else(|| format!("missing ')' after {word}("))?;
        let inner = String::from_utf8_lossy(&self.text[self.pos..self.pos + close]).into_owned();
        self.pos += close + 1;
        let args: Vec<&str> = inner.split(',').collect();
        let one = |args: &[&str]| -> Result<String, String> {
            match args {
                [a] => Ok(a.to_string()),
                _ => Err(format!("{word}() takes one argument")),
            }
        };
        match word.as_str() {
            "defined" => Ok(self.env.get(&one(&args)?).is_some()),
            // lbd has none of HAProxy's build features to test.
            "feature" => one(&args).map(|_| false),
            "streq" | "strneq" => match args.as_slice() {
                [a, b] => Ok((a == b) == (word == "streq")),
                _ => Err(format!("{word}() takes two arguments")),
            },
            "version_atleast" => Ok(compare_versions(HAPROXY_VERSION, &one(&args)?)?.is_ge()),
            "version_before" => Ok(compare_versions(HAPROXY_VERSION, &one(&args)?)?.is_lt()),
            _ => Err(format!("unknown predicate {word}()")),
        }
    }
}

/// Compares dotted versions numerically (`2.6.12` > `2.6`); a part that
/// is not a number ends the comparison (`2.6-dev1` is `2.6`).
fn compare_versions(a: &str, b: &str) -> Result<std::cmp::Ordering, String> {
    let parts = |v: &str| -> Result<Vec<u64>, String> {
        let mut out = Vec::new();
        for part in v.trim().split('.') {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            if digits.is_empty() {
                if out.is_empty() {
                    return Err(format!("{v:?} is not a version"));
                }
                break;
            }
            out.push(
                digits
                    .parse()
                    .map_err(|_| format!("{v:?} is not a version"))?,
            );
            if digits.len() != part.len() {
                break;
            }
        }
        Ok(out)
    };
    let (a, b) = (parts(a)?, parts(b)?);
    let len = a.len().max(b.len());
    let get = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
    Ok((0..len)
        .map(|i| get(&a, i).cmp(&get(&b, i)))
        .find(|o| o.is_ne())
        .unwrap_or(std::cmp::Ordering::Equal))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env::with(|name| match name {
            "HOME" => Some("/root".to_owned()),
            "XX" => Some("a b".to_owned()),
            "EMPTY" => Some(String::new()),
            "PORT" => Some("8080".to_owned()),
            _ => None,
        })
    }

    fn words(line: &str) -> Vec<String> {
        tokenize(line, &env()).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    /// The expected values were printed by HAProxy 2.6.12 (`.notice`).
    #[test]
    fn quoting_and_escapes_as_haproxy() {
        assert_eq!(words("  bind :80  # comment"), ["bind", ":80"]);
        assert_eq!(words("\t.notice ${HOME}"), [".notice", "${HOME}"]);
        assert_eq!(words("'single $HOME'"), ["single $HOME"]);
        assert_eq!(
            words(r#""dq ${NOPE-dflt} \x41\"q\" a\ b""#),
            [r#"dq dflt A"q" a b"#]
        );
        assert_eq!(words(r"a\ b\#c\\d\'e"), [r"a b#c\d'e"]);
        assert_eq!(words(r#""x"'y'z"#), ["xyz"]);
        assert_eq!(words(r#""${XX[*]}""#), ["a", "b"]);
        assert_eq!(words(r#""${EMPTY}""#), [""]);
        assert_eq!(words(r#""$HOME/x${HOME}y""#), ["/root/x/rooty"]);
        assert_eq!(words(r#""\r\n\t|""#), ["\r\n\t|"]);
        assert_eq!(words(r#""\q""#), [r"\q"]);
        assert_eq!(words(r#""[$NOPE]""#), ["[]"]);
        assert_eq!(words("a '' b"), ["a", "", "b"]);
        assert_eq!(words("x#y"), ["x"]);
        assert_eq!(words(r#""a#b" c"#), ["a#b", "c"]);
        assert_eq!(
            words(r#"bind "127.0.0.1:${PORT}""#),
            ["bind", "127.0.0.1:8080"]
        );
        assert_eq!(words(""), Vec::<String>::new());
        assert_eq!(words("   # only a comment"), Vec::<String>::new());
    }

    #[test]
    fn malformed_lines_are_errors() {
        for (line, reason) in [
            (r"'a\'b'", "unmatched quote at position 6"),
            (r#"x "open"#, "unmatched quote at position 3"),
            (
                r#""a$ b""#,
                "forbidden first char in environment variable name at position 4",
            ),
            (
                r#""$1x""#,
                "forbidden first char in environment variable name at position 3",
            ),
            (
                r#""${NOPE""#,
                "unmatched brace in environment variable name at position 3",
            ),
            (r"\x4", "invalid or incomplete '\\x' sequence at position 1"),
            (
                r"\xff",
                "a '\\x' escape makes a word that is not UTF-8 text",
            ),
        ] {
            assert_eq!(tokenize(line, &env()), Err(reason.to_owned()), "{line}");
        }
    }

    #[test]
    fn conditions() {
        let env = env();
        for (cond, value) in [
            ("1", true),
            ("0", false),
            ("42", true),
            ("defined(HOME)", true),
            ("defined(NOPE)", false),
            ("!defined(NOPE)", true),
            ("version_atleast(2.4)", true),
            ("version_atleast(2.6.12)", true),
            ("version_atleast(2.6.13)", false),
            ("version_atleast(3.0-dev1)", false),
            ("version_before(2.7)", true),
            ("version_before(2.6)", false),
            ("streq(a,a)", true),
            ("strneq(a,a)", false),
            ("feature(OPENSSL)", false),
            ("defined(HOME) && version_before(2.4)", false),
            ("defined(NOPE) || 1", true),
            ("!(0 || 0) && (1)", true),
        ] {
            assert_eq!(evaluate(cond, &env), Ok(value), "{cond}");
        }
        for cond in ["", "nope", "foo(1)", "(1", "1 &&", "defined(a,b)", "1 2"] {
            assert!(evaluate(cond, &env).is_err(), "{cond}");
        }
    }

    fn lex(text: &str) -> (Vec<(usize, Vec<String>)>, Diags) {
        let mut diags = Diags::default();
        let env = env();
        let mut lexer = FileLexer::new("t.cfg".into(), text.as_bytes(), &diags);
        let mut lines = Vec::new();
        while let Some(line) = lexer.next_line(&env, &mut diags) {
            lines.push((line.loc.line, line.words));
        }
        (lines, diags)
    }

    #[test]
    fn conditional_blocks_keep_and_skip_lines() {
        let (lines, diags) = lex(
            "a\n.if version_atleast(2.2)\n b\n .if 0\n c\n .elif defined(HOME)\n d\n .else\n e\n .endif\n\
             .elif 1\n f\n.else\n g\n.endif\n.if 0\n 'unmatched\n.endif\nh\r\n",
        );
        assert!(diags.errors.is_empty(), "{:?}", diags.errors);
        let kept: Vec<(usize, &str)> = lines.iter().map(|(n, w)| (*n, w[0].as_str())).collect();
        assert_eq!(kept, [(1, "a"), (3, "b"), (7, "d"), (19, "h")]);
    }

    #[test]
    fn directives_report_and_unbalanced_blocks_are_errors() {
        let (_, diags) =
            lex(".warning \"careful\"\n.notice x y\n.alert 'stop'\n.endif\n.else\n.if 1\n");
        let warnings: Vec<String> = diags.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("[t.cfg:1] : 'careful'"),
            "{warnings:?}"
        );
        let errors: Vec<String> = diags.errors.iter().map(ToString::to_string).collect();
        for (line, text) in [
            (2, "'.notice' takes exactly one argument"),
            (3, "'stop'"),
            (4, "'.endif' without a matching '.if'"),
            (5, "'.else' without a matching '.if'"),
            (6, "'.if' without a matching '.endif'"),
        ] {
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains(&format!("[t.cfg:{line}] : {text}"))),
                "{line} {text}: {errors:#?}"
            );
        }
    }

    #[test]
    fn binary_and_oversized_lines_are_errors_with_their_line() {
        let mut text = b"global\n\x7fELF\x02\x01\x01\x00\x00junk\n".to_vec();
        text.extend_from_slice(&[0xff, 0xfe, b'\n']);
        text.extend(std::iter::repeat_n(b'x', MAX_LINE + 1));
        text.push(b'\n');
        let (lines, diags) = lex(std::str::from_utf8(&[]).unwrap_or_default());
        assert!(lines.is_empty() && diags.errors.is_empty());
        let mut diags = Diags::default();
        let env = env();
        let mut lexer = FileLexer::new("bin".into(), &text, &diags);
        let mut kept = Vec::new();
        while let Some(line) = lexer.next_line(&env, &mut diags) {
            kept.push(line.words);
        }
        assert_eq!(kept, [["global"]]);
        let errors: Vec<String> = diags.errors.iter().map(ToString::to_string).collect();
        assert!(
            errors[0].contains("[bin:2] : stray NUL character at position 8"),
            "{errors:?}"
        );
        assert!(
            errors[1].contains("[bin:3] : the line is not UTF-8 text"),
            "{errors:?}"
        );
        assert!(
            errors[2].contains("[bin:4] : line too long (65537 bytes"),
            "{errors:?}"
        );
    }

    #[test]
    fn garbage_stops_after_too_many_errors() {
        let text: Vec<u8> = std::iter::repeat_n(b"\x00\xff\n".as_slice(), 1000)
            .flatten()
            .copied()
            .collect();
        let mut diags = Diags::default();
        let env = env();
        let mut lexer = FileLexer::new("bin".into(), &text, &diags);
        assert!(lexer.next_line(&env, &mut diags).is_none());
        assert_eq!(diags.errors.len(), MAX_ERRORS_PER_FILE + 1);
    }
}
