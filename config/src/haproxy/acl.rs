//! `acl <name> src ...` and `tcp-request connection accept|reject`: the
//! listener's `allowed_cidrs`, lbd's one allow list.
//!
//! Accepted forms (with named or inline `{ src ... }` acls, several `acl`
//! lines with one name adding up):
//!
//! * `tcp-request connection reject unless <acl>` or `... reject if !<acl>`;
//! * `tcp-request connection accept if <acl>` lines followed by a plain
//!   `tcp-request connection reject`;
//! * a plain `tcp-request connection accept` (everyone, as without rules).
//!
//! Anything else (deny lists, other criteria, several terms) is refused:
//! lbd could not do what it says.

use ipnet::IpNet;

use super::sections::{arg_count, need_side, At, Ctx, Parts, Proxy, Settings, L4_ONLY};
use super::{Diags, Reported};

/// The `src` acls of a proxy: name → networks.
#[derive(Debug, Clone, Default)]
pub struct Acls {
    pub named: Vec<(String, At<Vec<String>>)>,
}

/// Which addresses a condition names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Named(String),
    Inline(Vec<String>),
}

/// `if`/`unless` `[!]` one acl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    /// True when the condition holds for the sources NOT in the acl
    /// (`unless X` or `if !X`).
    pub outside: bool,
    pub source: Source,
}

/// `tcp-request connection accept|reject [cond]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpRule {
    pub accept: bool,
    pub cond: Option<Cond>,
}

pub fn keyword(
    ctx: &mut Ctx,
    _settings: &mut Settings,
    parts: Option<&mut Parts>,
) -> Option<Result<(), String>> {
    match ctx.words[0].as_str() {
        "acl" => Some(acl(ctx, parts)),
        "tcp-request" => Some(tcp_request(ctx, parts)),
        _ => None,
    }
}

/// Checks the values of a `src` acl.
fn networks(values: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut values = values.iter();
    while let Some(value) = values.next() {
        match value.as_str() {
            "-f" => {
                return Err(
                    "'src -f <file>': acl files are not supported; list the networks".to_owned(),
                )
            }
            "--" => continue,
            "-m" => match values.next().map(String::as_str) {
                Some("ip") => continue,
                other => {
                    return Err(format!(
                        "acl match method '-m {}' is not supported for 'src' (only -m ip)",
                        other.unwrap_or_default()
                    ))
                }
            },
            flag if flag.starts_with('-') => {
                return Err(format!("acl flag '{flag}' is not supported"))
            }
            _ => {}
        }
        if value.parse::<IpNet>().is_err() && value.parse::<std::net::IpAddr>().is_err() {
            return Err(format!(
                "'{value}' is not an address or a network (e.g. 10.0.0.0/8)"
            ));
        }
        out.push(value.clone());
    }
    if out.is_empty() {
        return Err("a 'src' acl needs at least one address or network".to_owned());
    }
    Ok(out)
}

fn acl(ctx: &mut Ctx, parts: Option<&mut Parts>) -> Result<(), String> {
    let words = ctx.words;
    let parts = match parts {
        Some(parts) => parts,
        None => return Err("'acl' is not allowed in a 'defaults' section".to_owned()),
    };
    arg_count(
        words,
        1,
        2..=usize::MAX,
        "acl <name> src <address|network>...",
    )?;
    let name = &words[1];
    if words[2] != "src" {
        return Err(format!(
            "acl criterion '{}' is not supported: lbd's acls match the client's source address \
             ('src') only ({L4_ONLY} otherwise)",
            words[2]
        ));
    }
    let nets = networks(&words[3..])?;
    match parts.acls.named.iter_mut().find(|(n, _)| n == name) {
        Some((_, existing)) => existing.value.extend(nets),
        None => parts.acls.named.push((name.clone(), ctx.at(nets))),
    }
    Ok(())
}

fn tcp_request(ctx: &mut Ctx, parts: Option<&mut Parts>) -> Result<(), String> {
    let words = ctx.words;
    arg_count(
        words,
        1,
        2..=usize::MAX,
        "tcp-request connection accept|reject [if|unless <acl>]",
    )?;
    match words[1].as_str() {
        "connection" => {}
        "content" | "inspect-delay" | "session" => {
            return Err(format!(
                "'tcp-request {}' is not supported: lbd does not inspect or delay connections \
                 (it only allows or rejects them by source address)",
                words[1]
            ))
        }
        other => return Err(format!("unknown 'tcp-request {other}'")),
    }
    let parts = need_side(ctx, parts, true)?;
    let accept = match words[2].as_str() {
        "accept" => true,
        "reject" => false,
        other => {
            return Err(format!(
                "'tcp-request connection {other}' is not supported: lbd accepts or rejects \
                 connections by source address only"
            ))
        }
    };
    let cond = match &words[3..] {
        [] => None,
        [kw, rest @ ..] if kw == "if" || kw == "unless" => Some(condition(kw == "unless", rest)?),
        _ => return Err("expected 'if' or 'unless' after the action".to_owned()),
    };
    parts.tcp_rules.push(ctx.at(TcpRule { accept, cond }));
    Ok(())
}

fn condition(unless: bool, words: &[String]) -> Result<Cond, String> {
    let (negated, words) = match words {
        [bang, rest @ ..] if bang == "!" => (true, rest),
        _ => (false, words),
    };
    let more_terms = || {
        "only one acl per rule is supported (lbd's allowed_cidrs is one allow list; put the \
         networks in one acl)"
            .to_owned()
    };
    match words {
        [name] => {
            let (bang, name) = match name.strip_prefix('!') {
                Some(name) => (true, name),
                None => (false, name.as_str()),
            };
            Ok(Cond {
                outside: unless ^ negated ^ bang,
                source: Source::Named(name.to_owned()),
            })
        }
        [open, criterion, rest @ ..] if open == "{" || open == "!{" => {
            let negated_brace = open == "!{";
            let Some(close) = rest.iter().position(|w| w == "}") else {
                return Err("missing '}' after the inline acl".to_owned());
            };
            if close + 1 != rest.len() {
                return Err(more_terms());
            }
            if criterion != "src" {
                return Err(format!(
                    "acl criterion '{criterion}' is not supported: lbd's acls match the \
                     client's source address ('src') only"
                ));
            }
            let nets = networks(&rest[..close])?;
            Ok(Cond {
                outside: unless ^ negated ^ negated_brace,
                source: Source::Inline(nets),
            })
        }
        [] => Err("a condition is missing after 'if'/'unless'".to_owned()),
        _ => Err(more_terms()),
    }
}

/// The listener's `allowed_cidrs` from the proxy's rules; errors go to
/// `diags`.
pub fn allowed_cidrs(proxy: &Proxy, diags: &mut Diags) -> Result<Vec<String>, Reported> {
    let rules = &proxy.parts.tcp_rules;
    let resolve = |cond: &Cond, loc: &super::Loc, diags: &mut Diags| -> Option<Vec<String>> {
        match &cond.source {
            Source::Inline(nets) => Some(nets.clone()),
            Source::Named(name) => match proxy.parts.acls.named.iter().find(|(n, _)| n == name) {
                Some((_, nets)) => Some(nets.value.clone()),
                None => {
                    diags.error(
                        Some(loc.clone()),
                        format!(
                            "acl '{name}' is not declared in {} '{}'",
                            proxy.kind.name(),
                            proxy.name
                        ),
                    );
                    None
                }
            },
        }
    };
    let shape_error = |loc: &super::Loc, diags: &mut Diags| {
        diags.error(
            Some(loc.clone()),
            "this combination of 'tcp-request connection' rules is not supported: lbd has one \
             allow list; write 'tcp-request connection reject unless <acl>', or 'accept if \
             <acl>' rules followed by a plain 'reject'",
        );
    };
    match rules.as_slice() {
        [] => Ok(Vec::new()),
        [At {
            value: TcpRule {
                accept: true,
                cond: None,
            },
            ..
        }] => Ok(Vec::new()),
        [At {
            value:
                TcpRule {
                    accept: false,
                    cond: Some(cond),
                },
            loc,
        }] if cond.outside => resolve(cond, loc, diags).ok_or(Reported),
        [accepts @ .., At {
            value:
                TcpRule {
                    accept: false,
                    cond: None,
                },
            ..
        }] if !accepts.is_empty() => {
            let mut all = Vec::new();
            for rule in accepts {
                match &rule.value {
                    TcpRule {
                        accept: true,
                        cond: Some(cond),
                    } if !cond.outside => {
                        all.extend(resolve(cond, &rule.loc, diags).ok_or(Reported)?)
                    }
                    _ => {
                        shape_error(&rule.loc, diags);
                        return Err(Reported);
                    }
                }
            }
            Ok(all)
        }
        [first, ..] => {
            shape_error(&first.loc, diags);
            Err(Reported)
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::haproxy::test_util::*;

    fn cidrs(rules: &str) -> Vec<String> {
        convert_ok(&format!(
            "defaults\n timeout connect 5s\n timeout client 5s\n timeout server 5s\n\
             listen l\n bind 127.0.0.1:7000\n{rules}\n server a 10.0.0.1:80\n"
        ))
        .listeners
        .remove(0)
        .allowed_cidrs
    }

    #[test]
    fn allow_list_forms() {
        let both = ["10.0.0.0/8", "192.168.1.1"];
        assert_eq!(
            cidrs(" tcp-request connection reject if !{ src 10.0.0.0/8 192.168.1.1 }"),
            both
        );
        assert_eq!(
            cidrs(" tcp-request connection reject unless { src 10.0.0.0/8 192.168.1.1 }"),
            both
        );
        assert_eq!(
            cidrs(" acl ok src 10.0.0.0/8\n acl ok src -m ip 192.168.1.1\n tcp-request connection reject unless ok"),
            both
        );
        assert_eq!(
            cidrs(" acl ok src 10.0.0.0/8 192.168.1.1\n tcp-request connection reject if !ok"),
            both
        );
        assert_eq!(
            cidrs(
                " acl a src 10.0.0.0/8\n tcp-request connection accept if a\n \
                 tcp-request connection accept if { src 192.168.1.1 }\n tcp-request connection reject"
            ),
            both
        );
        assert_eq!(
            cidrs(" tcp-request connection accept"),
            Vec::<String>::new()
        );
        assert_eq!(cidrs(""), Vec::<String>::new());
    }

    #[test]
    fn acl_errors() {
        for (rules, line, reason) in [
            (" tcp-request connection reject if { src 10.0.0.0/8 }", 7, "one allow list"),
            (" tcp-request connection reject", 7, "one allow list"),
            (" acl a src 10.0.0.1\n acl b src 10.0.0.2\n tcp-request connection reject unless a b", 9, "only one acl per rule"),
            (" tcp-request connection reject unless nope", 7, "acl 'nope' is not declared"),
            (" acl p path /x", 7, "acl criterion 'path' is not supported"),
            (" acl a src nope", 7, "is not an address or a network"),
            (" acl a src -f /etc/ok.lst", 7, "acl files are not supported"),
            (" tcp-request content reject", 7, "does not inspect"),
            (" tcp-request inspect-delay 5s", 7, "does not inspect"),
            (" tcp-request connection track-sc0 src", 7, "source address only"),
            (" tcp-request connection reject unless { src 10.0.0.1", 7, "missing '}'"),
            (" tcp-request connection reject when x", 7, "expected 'if' or 'unless'"),
        ] {
            assert_error(
                &format!(
                    "defaults\n timeout connect 5s\n timeout client 5s\n timeout server 5s\n\
                     listen l\n bind 127.0.0.1:7000\n{rules}\n server a 10.0.0.1:80\n"
                ),
                line,
                reason,
            );
        }
        assert_error(
            "defaults\n acl a src 10.0.0.1\n",
            2,
            "not allowed in a 'defaults' section",
        );
        assert_error(
            "backend b\n tcp-request connection reject\n server a 10.0.0.1:80\n",
            2,
            "not allowed in a 'backend' section",
        );
    }
}
