//! The commands of the CLI: their words, the level they need, their help
//! line and the function that answers them, in one table. Dispatch, `help`
//! and the answer to an unknown command all read it.
//!
//! Levels are HAProxy 2.6's (checked against it): `user` reads, `operator`
//! may also `clear counters`, `admin` may change servers and limits. A
//! command above the session's level gets `Permission denied`.

use lbd_config::CliLevel;

use super::ctx::Ctx;
use super::{change, show};

/// Answers a command, given the words after its own. The answer ends with
/// a line end when it is not empty; the session adds the empty line that
/// ends every answer.
type Handler = fn(&mut Ctx<'_>, &[&str]) -> String;

pub struct Entry {
    pub words: &'static [&'static str],
    pub usage: &'static str,
    pub help: &'static str,
    pub level: CliLevel,
    pub run: Handler,
}

const fn entry(
    words: &'static [&'static str],
    usage: &'static str,
    help: &'static str,
    level: CliLevel,
    run: Handler,
) -> Entry {
    Entry {
        words,
        usage,
        help,
        level,
        run,
    }
}

use CliLevel::{Admin, Operator, User};

/// Every command lbd answers, in `help`'s order (HAProxy's: alphabetical,
/// then `help`, `prompt`, `quit`).
pub const COMMANDS: &[Entry] = &[
    entry(
        &["clear", "counters"],
        "clear counters [all]",
        "clear max statistics counters (or all counters)",
        Operator,
        change::clear_counters,
    ),
    entry(
        &["disable", "health"],
        "disable health",
        "disable health checks",
        Admin,
        change::disable_health,
    ),
    entry(
        &["disable", "server"],
        "disable server (DEPRECATED)",
        "disable a server for maintenance (use 'set server' instead)",
        Admin,
        change::disable_server,
    ),
    entry(
        &["enable", "health"],
        "enable health",
        "enable health checks",
        Admin,
        change::enable_health,
    ),
    entry(
        &["enable", "server"],
        "enable server  (DEPRECATED)",
        "enable a disabled server (use 'set server' instead)",
        Admin,
        change::enable_server,
    ),
    entry(
        &["get", "weight"],
        "get weight <bk>/<srv>",
        "report a server's current weight",
        User,
        show::get_weight,
    ),
    entry(
        &["operator"],
        "operator",
        "lower the level of the current CLI session to operator",
        User,
        lower_to_operator,
    ),
    entry(
        &["set", "maxconn", "frontend"],
        "set maxconn frontend <frontend> <value>",
        "change a frontend's maxconn setting",
        Admin,
        change::set_maxconn_frontend,
    ),
    entry(
        &["set", "maxconn", "server"],
        "set maxconn server <bk>/<srv>",
        "change a server's maxconn setting",
        Admin,
        change::set_maxconn_server,
    ),
    entry(
        &["set", "server"],
        "set server <bk>/<srv> [opts]",
        "change a server's state, weight or address",
        Admin,
        change::set_server,
    ),
    entry(
        &["set", "weight"],
        "set weight <bk>/<srv>  (DEPRECATED)",
        "change a server's weight (use 'set server' instead)",
        Admin,
        change::set_weight,
    ),
    entry(
        &["show", "backend"],
        "show backend",
        "list backends in the current running config",
        User,
        show::backend,
    ),
    entry(
        &["show", "cli", "level"],
        "show cli level",
        "display the level of the current CLI session",
        User,
        show::cli_level,
    ),
    entry(
        &["show", "info"],
        "show info",
        "report information about the running process",
        User,
        show::info,
    ),
    entry(
        &["show", "servers", "state"],
        "show servers state [<backend>]",
        "dump volatile server information (all or for a single backend)",
        User,
        show::servers_state,
    ),
    entry(
        &["show", "stat"],
        "show stat [desc|json|no-maint|typed|up]*",
        "report counters for each proxy and server",
        User,
        show::stat,
    ),
    entry(
        &["show", "version"],
        "show version",
        "show version of the current process",
        User,
        show::version,
    ),
    entry(
        &["shutdown", "sessions", "server"],
        "shutdown sessions server <bk>/<srv>",
        "kill sessions on a server",
        Admin,
        change::shutdown_sessions,
    ),
    entry(
        &["user"],
        "user",
        "lower the level of the current CLI session to user",
        User,
        lower_to_user,
    ),
    entry(
        &["help"],
        "help [<command>]",
        "list matching or all commands",
        User,
        help,
    ),
    entry(
        &["prompt"],
        "prompt",
        "toggle interactive mode with prompt",
        User,
        prompt,
    ),
    entry(&["quit"], "quit", "disconnect", User, quit),
];

/// HAProxy commands lbd knows of but does not have: they get a clear
/// answer instead of the list of commands.
const NOT_IN_LBD: &[(&[&str], &str)] = &[
    (&["disable", "agent"], "lbd has no agent checks"),
    (&["enable", "agent"], "lbd has no agent checks"),
    (
        &["shutdown", "session"],
        "lbd does not list single sessions",
    ),
    (&["show", "sess"], "lbd does not list single sessions"),
    (&["show", "table"], "lbd has no stick tables on the CLI"),
    (
        &["set", "maxconn", "global"],
        "set 'maxconn' in the config and reload",
    ),
    (
        &["add", "server"],
        "add the server to the config and reload",
    ),
    (
        &["del", "server"],
        "remove the server from the config and reload",
    ),
    (
        &["disable", "frontend"],
        "remove the frontend from the config and reload",
    ),
    (
        &["enable", "frontend"],
        "add the frontend to the config and reload",
    ),
    (
        &["shutdown", "frontend"],
        "remove the frontend from the config and reload",
    ),
];

/// The longest entry of `table` whose words start `words`.
fn find<'t, T>(table: &'t [T], key: impl Fn(&T) -> &[&str], words: &[&str]) -> Option<&'t T> {
    table
        .iter()
        .filter(|e| words.starts_with(key(e)))
        .max_by_key(|e| key(e).len())
}

/// Answers one command (its words), without the empty line that ends it.
pub fn run(ctx: &mut Ctx<'_>, words: &[String]) -> String {
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let Some(entry) = find(COMMANDS, |e| e.words, &words) else {
        if let Some((known, instead)) = find(NOT_IN_LBD, |e| e.0, &words) {
            return format!("lbd does not have '{}': {instead}.\n", known.join(" "));
        }
        return unknown(&words);
    };
    if ctx.session.level < entry.level {
        return "Permission denied\n".to_owned();
    }
    (entry.run)(ctx, &words[entry.words.len()..])
}

fn help_line(e: &Entry) -> String {
    format!("  {:<40}: {}\n", e.usage, e.help)
}

/// HAProxy's answer to a command it does not know: the commands that start
/// like it, or all of them.
fn unknown(words: &[&str]) -> String {
    let close: Vec<&Entry> = COMMANDS
        .iter()
        .filter(|e| words.first() == e.words.first() && e.words.len() > 1)
        .collect();
    if close.is_empty() {
        let mut out =
            "Unknown command. Please enter one of the following commands only:\n".to_owned();
        COMMANDS.iter().for_each(|e| out.push_str(&help_line(e)));
        return out;
    }
    let mut out =
        "Unknown command, but maybe one of the following ones is a better match:\n".to_owned();
    close.iter().for_each(|e| out.push_str(&help_line(e)));
    COMMANDS
        .iter()
        .filter(|e| matches!(e.words, ["help"] | ["prompt"] | ["quit"]))
        .for_each(|e| out.push_str(&help_line(e)));
    out
}

fn help(_: &mut Ctx<'_>, args: &[&str]) -> String {
    let mut out = "The following commands are valid at this level:\n".to_owned();
    COMMANDS
        .iter()
        .filter(|e| args.is_empty() || e.words.starts_with(args) || args.starts_with(e.words))
        .for_each(|e| out.push_str(&help_line(e)));
    out
}

fn prompt(ctx: &mut Ctx<'_>, _: &[&str]) -> String {
    ctx.session.interactive = !ctx.session.interactive;
    String::new()
}

fn quit(ctx: &mut Ctx<'_>, _: &[&str]) -> String {
    ctx.session.quit = true;
    String::new()
}

fn lower_to_user(ctx: &mut Ctx<'_>, _: &[&str]) -> String {
    ctx.session.level = User;
    String::new()
}

fn lower_to_operator(ctx: &mut Ctx<'_>, _: &[&str]) -> String {
    ctx.session.level = ctx.session.level.min(Operator);
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_match_wins_and_help_lines_are_haproxys() {
        let words = ["show", "servers", "state", "be"];
        let e = find(COMMANDS, |e| e.words, &words).expect("found");
        assert_eq!(e.usage, "show servers state [<backend>]");
        assert!(find(COMMANDS, |e| e.words, &["show"]).is_none());
        // HAProxy pads the usage to 40 columns.
        assert_eq!(
            help_line(&COMMANDS[5]),
            "  get weight <bk>/<srv>                   : report a server's current weight\n"
        );
    }

    #[test]
    fn unknown_commands_list_close_ones_or_all() {
        let close = unknown(&["show", "frobs"]);
        assert!(close.starts_with("Unknown command, but maybe"), "{close}");
        assert!(close.contains("show stat") && !close.contains("set weight"));
        let all = unknown(&["frob"]);
        assert!(all.starts_with("Unknown command. Please enter"));
        assert_eq!(all.lines().count(), COMMANDS.len() + 1);
    }
}
