//! The fields of the programmable check types in `[pool.health]`:
//! `command` and `command_path` (`external`), `steps` (`tcp_script`).

use super::fields::{int_in_range, Scope};
use crate::check_program::from_hex;
use crate::file::{HealthSection, ScriptStepSection};
use crate::model::{
    CheckKind, Expectation, ExternalCheck, Payload, ScriptRegex, ScriptStep, SCRIPT_BUFFER,
};

/// The `external` fields; errors if set for another check type, or if an
/// `external` check has no usable program.
pub(super) fn external_fields(
    scope: &mut Scope,
    kind: CheckKind,
    section: &HealthSection,
) -> Option<ExternalCheck> {
    if kind != CheckKind::External {
        let fields = [
            ("command", !section.command.is_empty()),
            ("command_path", section.command_path.is_some()),
        ];
        return super::health::unused_fields(scope, kind, &fields, "external")
            .then(ExternalCheck::default);
    }
    let path = section.command_path.clone().unwrap_or_default();
    let mut good = true;
    if path.contains('\0') {
        scope.error("command_path contains a NUL byte");
        good = false;
    }
    let Some(program) = section.command.first() else {
        scope.error(
            "command is required for external checks: the program and its arguments, \
             e.g. [\"/usr/local/bin/check\", \"-q\"]",
        );
        return None;
    };
    if program.is_empty() {
        scope.error("command: the program (the first element) must not be empty");
        good = false;
    } else if !program.contains('/') && path.is_empty() {
        scope.error(format!(
            "command: program {program:?} is not a path and command_path is empty: \
             give its absolute path, or set command_path (e.g. \"/usr/bin:/bin\")"
        ));
        good = false;
    }
    for (i, arg) in section.command.iter().enumerate() {
        if arg.contains('\0') {
            scope.error(format!("command: element {} contains a NUL byte", i + 1));
            good = false;
        }
    }
    good.then(|| ExternalCheck {
        command: section.command.clone(),
        path,
    })
}

/// The `tcp_script` steps; errors if set for another check type, and for
/// an empty script, a step with no or several actions, bad hex, a bad
/// regular expression, or steps before the first `connect` of a script
/// that has one (HAProxy's rule: without any `connect`, the script starts
/// on a connection to the check address).
pub(super) fn script_fields(
    scope: &mut Scope,
    kind: CheckKind,
    section: &HealthSection,
) -> Option<Vec<ScriptStep>> {
    if kind != CheckKind::TcpScript {
        let fields = [("steps", !section.steps.is_empty())];
        return super::health::unused_fields(scope, kind, &fields, "tcp_script").then(Vec::new);
    }
    if section.steps.is_empty() {
        scope.error(
            "steps is required for tcp_script checks, e.g. \
             [{ send = \"PING\\r\\n\" }, { expect_string = \"+PONG\" }]",
        );
        return None;
    }
    let steps: Vec<Option<ScriptStep>> = section
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| script_step(&mut scope.child(format_args!("step {}", i + 1)), step))
        .collect();
    let has_connect = section.steps.iter().any(|s| s.connect.is_some());
    if has_connect && section.steps[0].connect.is_none() {
        let first = actions(&section.steps[0])
            .first()
            .copied()
            .unwrap_or("a step");
        scope.child("step 1").error(format!(
            "{first} before the first connect: a script with connect steps must start with one"
        ));
        return None;
    }
    steps.into_iter().collect()
}

/// The action fields set in `step`, in the order the error lists them.
fn actions(step: &ScriptStepSection) -> Vec<&'static str> {
    [
        ("connect", step.connect.is_some()),
        ("send", step.send.is_some()),
        ("send_binary", step.send_binary.is_some()),
        ("expect_string", step.expect_string.is_some()),
        ("expect_rstring", step.expect_rstring.is_some()),
        ("expect_binary", step.expect_binary.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect()
}

/// One step (`scope` is `... health: step N`).
fn script_step(scope: &mut Scope, step: &ScriptStepSection) -> Option<ScriptStep> {
    let set = actions(step);
    if set.len() != 1 {
        let got = if set.is_empty() {
            "none".to_owned()
        } else {
            set.join(", ")
        };
        scope.error(format!(
            "a step has exactly one of connect, send, send_binary, expect_string, \
             expect_rstring, expect_binary (got {got})"
        ));
        return None;
    }
    if let Some(connect) = &step.connect {
        let port = match connect.port {
            None => None,
            Some(port) => Some(int_in_range(scope, "connect port", port, 1..=u16::MAX)?),
        };
        return Some(ScriptStep::Connect { port });
    }
    if let Some(text) = &step.send {
        let text = bounded(scope, "send", text)?;
        return Some(ScriptStep::Send(Payload::Text(text.to_owned())));
    }
    if let Some(hex) = &step.send_binary {
        let bytes = hex_field(scope, "send_binary", hex)?;
        let bytes = bounded(scope, "send_binary", &bytes)?;
        return Some(ScriptStep::Send(Payload::Binary(bytes.to_vec())));
    }
    if let Some(text) = &step.expect_string {
        let text = bounded(scope, "expect_string", text)?;
        return Some(ScriptStep::Expect(Expectation::String(text.to_owned())));
    }
    if let Some(hex) = &step.expect_binary {
        let bytes = hex_field(scope, "expect_binary", hex)?;
        let bytes = bounded(scope, "expect_binary", &bytes)?;
        return Some(ScriptStep::Expect(Expectation::Binary(bytes.to_vec())));
    }
    let pattern = step.expect_rstring.as_deref()?;
    let pattern = bounded(scope, "expect_rstring", pattern)?;
    match ScriptRegex::new(pattern) {
        Ok(regex) => Some(ScriptStep::Expect(Expectation::Regex(regex))),
        Err(why) => {
            scope.error(format!(
                "expect_rstring {pattern:?} is not a valid regular expression: {why}"
            ));
            None
        }
    }
}

/// `hex` as bytes, or an error quoting it.
fn hex_field(scope: &mut Scope, field: &str, hex: &str) -> Option<Vec<u8>> {
    let bytes = from_hex(hex);
    if bytes.is_none() {
        scope.error(format!(
            "{field} {hex:?} is not hex: an even number of hex digits, e.g. \"2a310d0a\""
        ));
    }
    bytes
}

/// `value` if it is neither empty nor longer than [`SCRIPT_BUFFER`] (more
/// could never be sent in one piece nor found in an answer, as in HAProxy).
fn bounded<'v, T: AsRef<[u8]> + ?Sized>(
    scope: &mut Scope,
    field: &str,
    value: &'v T,
) -> Option<&'v T> {
    let len = value.as_ref().len();
    if len == 0 {
        scope.error(format!("{field} must not be empty"));
        return None;
    }
    if len > SCRIPT_BUFFER {
        scope.error(format!(
            "{field} is {len} bytes long, more than the {} KiB a check sends or reads at once",
            SCRIPT_BUFFER / 1024
        ));
        return None;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use crate::validate::tests::*;

    fn health(lines: &str) -> HealthCheck {
        let config = valid(&health_with(lines));
        config.pools[0].health.clone().expect("health")
    }

    #[test]
    fn external_command_and_path() {
        let check = health(
            "type = \"external\"\ncommand = [\"/var/lib/octavia/ping-wrapper.sh\"]\n\
             timeout = \"1s\"",
        );
        assert_eq!(check.kind, CheckKind::External);
        assert_eq!(
            check.external,
            ExternalCheck {
                command: vec!["/var/lib/octavia/ping-wrapper.sh".into()],
                path: String::new(),
            }
        );
        let check = health(
            "type = \"external\"\ncommand = [\"check\", \"-q\", \"\"]\n\
             command_path = \"/usr/bin:/bin\"",
        );
        assert_eq!(check.external.command, ["check", "-q", ""]);
        assert_eq!(check.external.path, "/usr/bin:/bin");
    }

    #[test]
    fn external_errors() {
        assert_eq!(
            invalid(&health_with("type = \"external\"")),
            [
                "pool \"api\": health: command is required for external checks: the program and \
              its arguments, e.g. [\"/usr/local/bin/check\", \"-q\"]"
            ]
        );
        assert_eq!(
            invalid(&health_with("type = \"external\"\ncommand = [\"ping\"]")),
            [
                "pool \"api\": health: command: program \"ping\" is not a path and command_path \
              is empty: give its absolute path, or set command_path (e.g. \"/usr/bin:/bin\")"
            ]
        );
        assert_eq!(
            invalid(&health_with(
                "type = \"external\"\ncommand = [\"\", \"a\\u0000b\"]\ncommand_path = \"/x\\u0000\""
            )),
            [
                "pool \"api\": health: command_path contains a NUL byte",
                "pool \"api\": health: command: the program (the first element) must not be \
                 empty",
                "pool \"api\": health: command: element 2 contains a NUL byte",
            ]
        );
        assert_eq!(
            invalid(&health_with(
                "command = [\"/bin/true\"]\ncommand_path = \"/bin\"\n\
                 steps = [{ send = \"x\" }]"
            )),
            [
                "pool \"api\": health: command is only used by external checks, not \"tcp\"",
                "pool \"api\": health: command_path is only used by external checks, not \"tcp\"",
                "pool \"api\": health: steps is only used by tcp_script checks, not \"tcp\"",
            ]
        );
        assert_eq!(
            invalid(&health_with(
                "type = \"external\"\ncommand = [\"/bin/true\"]\npath = \"/\""
            )),
            ["pool \"api\": health: path is only used by http and https checks, not \"external\""]
        );
    }

    #[test]
    fn tcp_script_steps() {
        let check = health(
            "type = \"tcp_script\"\nsteps = [\n\
             { send = \"PING\\r\\n\" },\n\
             { expect_string = \"+PONG\" },\n\
             { send_binary = \"2A0D0a\" },\n\
             { expect_binary = \"00ff\" },\n\
             { expect_rstring = \"role:(master|slave)\" },\n]",
        );
        assert_eq!(check.kind, CheckKind::TcpScript);
        assert_eq!(
            check.script,
            [
                ScriptStep::Send(Payload::Text("PING\r\n".into())),
                ScriptStep::Expect(Expectation::String("+PONG".into())),
                ScriptStep::Send(Payload::Binary(vec![0x2a, 0x0d, 0x0a])),
                ScriptStep::Expect(Expectation::Binary(vec![0x00, 0xff])),
                ScriptStep::Expect(Expectation::Regex(
                    ScriptRegex::new("role:(master|slave)").unwrap()
                )),
            ]
        );
        let check = health(
            "type = \"tcp_script\"\nsteps = [{ connect = {} }, { expect_string = \"+OK\" },\n\
             { connect = { port = 143 } }, { expect_string = \"* OK\" }]",
        );
        assert_eq!(check.script[0], ScriptStep::Connect { port: None });
        assert_eq!(check.script[2], ScriptStep::Connect { port: Some(143) });
    }

    #[test]
    fn tcp_script_errors_name_the_step() {
        assert_eq!(
            invalid(&health_with("type = \"tcp_script\"")),
            [
                "pool \"api\": health: steps is required for tcp_script checks, e.g. \
              [{ send = \"PING\\r\\n\" }, { expect_string = \"+PONG\" }]"
            ]
        );
        assert_eq!(
            invalid(&health_with(
                "type = \"tcp_script\"\nsteps = [\n\
                 { send = \"a\", expect_string = \"b\" },\n\
                 {},\n\
                 { send_binary = \"0g\" },\n\
                 { expect_binary = \"abc\" },\n\
                 { expect_rstring = \"(\" },\n\
                 { send = \"\" },\n\
                 { connect = { port = 70000 } },\n]"
            )),
            [
                "pool \"api\": health: step 1: a step has exactly one of connect, send, \
                 send_binary, expect_string, expect_rstring, expect_binary (got send, \
                 expect_string)",
                "pool \"api\": health: step 2: a step has exactly one of connect, send, \
                 send_binary, expect_string, expect_rstring, expect_binary (got none)",
                "pool \"api\": health: step 3: send_binary \"0g\" is not hex: an even number \
                 of hex digits, e.g. \"2a310d0a\"",
                "pool \"api\": health: step 4: expect_binary \"abc\" is not hex: an even number \
                 of hex digits, e.g. \"2a310d0a\"",
                "pool \"api\": health: step 5: expect_rstring \"(\" is not a valid regular \
                 expression: unclosed group",
                "pool \"api\": health: step 6: send must not be empty",
                "pool \"api\": health: step 7: connect port 70000 out of range (1-65535)",
                "pool \"api\": health: step 1: send before the first connect: a script with \
                 connect steps must start with one",
            ]
        );
        assert_eq!(
            invalid(&health_with(
                "type = \"tcp_script\"\nsteps = [{ expect_string = \"220\" }, { connect = {} }]"
            )),
            [
                "pool \"api\": health: step 1: expect_string before the first connect: a script \
              with connect steps must start with one"
            ]
        );
        let long = "x".repeat(SCRIPT_BUFFER + 1);
        assert_eq!(
            invalid(&health_with(&format!(
                "type = \"tcp_script\"\nsteps = [{{ expect_string = \"{long}\" }}]"
            ))),
            [
                "pool \"api\": health: step 1: expect_string is 16385 bytes long, more than the \
              16 KiB a check sends or reads at once"
            ]
        );
    }

    #[test]
    fn unknown_step_fields_are_rejected_at_parse_time() {
        for text in [
            "[[pool]]\nname = \"a\"\n[pool.health]\nsteps = [{ sendd = \"x\" }]\n",
            "[[pool]]\nname = \"a\"\n[pool.health]\nsteps = [{ connect = { prot = 1 } }]\n",
        ] {
            match from_toml_str(text, "t.toml") {
                Err(LoadError::Syntax { message, .. }) => {
                    assert!(message.contains("unknown field"), "{message}")
                }
                other => panic!("{text:?}: expected a syntax error, got {other:?}"),
            }
        }
    }
}
