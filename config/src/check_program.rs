//! The typed settings of the two programmable check types: `external` (a
//! program run for each check, HAProxy's `external-check`) and
//! `tcp_script` (connect, send and expect steps, HAProxy's `tcp-check`).
//! Re-exported by [`crate::model`], like every model type.

/// `external`: a program run for each check (HAProxy `external-check
/// command` and `external-check path`). It is given HAProxy's four
/// arguments and `HAPROXY_*` environment, nothing else of lbd's
/// environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalCheck {
    /// The program and its own arguments, run directly (never through a
    /// shell); HAProxy's `<proxy_address> <proxy_port> <server_address>
    /// <server_port>` follow them.
    pub command: Vec<String>,
    /// `PATH` in the program's environment; empty by default, as HAProxy's.
    pub path: String,
}

/// The most a `tcp_script` check keeps of an answer (since the last
/// `send`): HAProxy's default `tune.bufsize`. An expect that has not
/// matched when this much has arrived fails, so a member that streams
/// forever costs a check no more than this.
pub const SCRIPT_BUFFER: usize = 16 * 1024;

/// One step of a `tcp_script` check (HAProxy `tcp-check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptStep {
    /// Open a connection to the member's check address (closing the
    /// previous one), on `port` instead of the check port if given.
    Connect { port: Option<u16> },
    /// Send these bytes.
    Send(Payload),
    /// Read until what arrived since the last `send` (or `connect`)
    /// matches; fail when the peer closes, [`SCRIPT_BUFFER`] bytes arrived
    /// without a match, or the check times out.
    Expect(Expectation),
}

/// What a `send` step sends, as the config wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// `send = "PING\r\n"`.
    Text(String),
    /// `send_binary = "2a310d0a"`.
    Binary(Vec<u8>),
}

impl Payload {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Payload::Text(text) => text.as_bytes(),
            Payload::Binary(bytes) => bytes,
        }
    }
}

/// What an `expect` step looks for in the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// `expect_string`: these bytes appear somewhere in the answer.
    String(String),
    /// `expect_binary` (hex): these bytes appear somewhere in the answer.
    Binary(Vec<u8>),
    /// `expect_rstring`: the regular expression matches somewhere in it.
    Regex(ScriptRegex),
}

/// A compiled `expect_rstring` pattern (Rust `regex` syntax, run on bytes,
/// in time linear in the answer's length). Equal when the patterns are.
#[derive(Debug, Clone)]
pub struct ScriptRegex(regex::bytes::Regex);

/// Compiled patterns larger than this are refused: a config cannot make a
/// check's automaton grow without bound.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl ScriptRegex {
    /// Compiles `pattern`; the error is one line, e.g. `unclosed group`.
    pub fn new(pattern: &str) -> Result<ScriptRegex, String> {
        regex::bytes::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(ScriptRegex)
            .map_err(|e| match e {
                regex::Error::Syntax(text) => text
                    .lines()
                    .rev()
                    .find_map(|l| l.strip_prefix("error: "))
                    .unwrap_or("syntax error")
                    .to_owned(),
                regex::Error::CompiledTooBig(limit) => {
                    format!("too large (compiled over {limit} bytes)")
                }
                other => other.to_string(),
            })
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Whether the pattern matches anywhere in `answer`.
    pub fn is_match(&self, answer: &[u8]) -> bool {
        self.0.is_match(answer)
    }
}

impl PartialEq for ScriptRegex {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ScriptRegex {}

/// Lower-case hex of `bytes`, as `send_binary` and `expect_binary` spell
/// them.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses an even number of hex digits (either case) into bytes.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_both_ways() {
        assert_eq!(from_hex("2A0d0a"), Some(vec![0x2a, 0x0d, 0x0a]));
        assert_eq!(from_hex(""), Some(vec![]));
        assert_eq!(to_hex(&[0x2a, 0x0d, 0x0a, 0xff]), "2a0d0aff");
        for bad in ["0", "0g", "zz", "2a 0d", "+1"] {
            assert_eq!(from_hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn regex_errors_are_one_line_and_patterns_compare_by_text() {
        assert_eq!(ScriptRegex::new("(").unwrap_err(), "unclosed group");
        let big = ScriptRegex::new("\\w{1000}{1000}").unwrap_err();
        assert!(big.starts_with("too large"), "{big}");
        let a = ScriptRegex::new("role:(master|slave)").unwrap();
        assert_eq!(a, ScriptRegex::new("role:(master|slave)").unwrap());
        assert_ne!(a, ScriptRegex::new("role:master").unwrap());
        assert!(a.is_match(b"# Replication\r\nrole:master\r\n"));
        assert!(!a.is_match(b"role:none"));
    }
}
