//! Splitting a CLI line as HAProxy does: commands at unescaped `;`, words
//! at unescaped blanks (spaces and tabs), `\x` standing for `x`.

/// The commands of `line`, each as its words. Every `;` ends a command, so
/// `a;` and `a;;b` hold empty commands (HAProxy answers each with its list
/// of commands), and an empty line is one empty command.
pub fn split(line: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    word.push(next);
                    in_word = true;
                }
            }
            ' ' | '\t' | '\r' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            ';' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
                commands.push(std::mem::take(&mut words));
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    commands.push(words);
    commands
}

#[cfg(test)]
mod tests {
    use super::split;

    fn s(line: &str) -> Vec<Vec<String>> {
        split(line)
    }

    #[test]
    fn commands_split_at_semicolons_and_words_at_blanks() {
        assert_eq!(
            s("show stat -1 -1 -1\n"),
            vec![vec!["show", "stat", "-1", "-1", "-1"]]
        );
        assert_eq!(
            s(" show  version;get\tweight be/s1 ;; "),
            vec![
                vec!["show", "version"],
                vec!["get", "weight", "be/s1"],
                vec![],
                vec![]
            ]
        );
        assert_eq!(s(""), vec![Vec::<String>::new()]);
        assert_eq!(s("  ;  \n"), vec![Vec::<String>::new(), vec![]]);
    }

    #[test]
    fn backslash_escapes_blanks_and_semicolons() {
        assert_eq!(
            s(r"get weight a\ b/s\;1"),
            vec![vec!["get", "weight", "a b/s;1"]]
        );
        assert_eq!(s(r"x \\"), vec![vec!["x", "\\"]]);
        // A trailing backslash escapes nothing.
        assert_eq!(s("x \\"), vec![vec!["x"]]);
    }
}
