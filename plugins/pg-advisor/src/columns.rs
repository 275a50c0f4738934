//! Index candidates from a normalized statement's text (as pg_stat_statements shows it:
//! constants replaced by `$n`): the columns its WHERE and JOIN conditions compare.
//!
//! This is a deliberately small scan of tokens, not an SQL parser: it finds `FROM`/`JOIN`
//! tables with their aliases and `column <op> value` / `column = column` comparisons. A
//! candidate it gets wrong costs nothing: the host verifies every proposed index with a
//! hypothetical index and EXPLAIN before anything is created.

/// A table a statement reads, as written (`schema.table` or `table`) with its alias.
#[derive(Debug, Clone, PartialEq)]
struct TableUse {
    name: String,
    alias: Option<String>,
}

/// An index candidate: a table (as written in the statement) and its columns, in order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Candidate {
    pub table: String,
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// An identifier or keyword, lower-cased unless it was double-quoted; may hold dots.
    Word(String),
    /// `$1`, a number or a string literal.
    Value,
    /// `=`, `<`, `>`, `<=`, `>=`.
    Compare(bool),
    Other(char),
}

const KEYWORDS: &[&str] = &[
    "select",
    "from",
    "where",
    "join",
    "inner",
    "left",
    "right",
    "full",
    "outer",
    "cross",
    "on",
    "and",
    "or",
    "not",
    "as",
    "group",
    "order",
    "by",
    "limit",
    "offset",
    "having",
    "using",
    "is",
    "null",
    "in",
    "like",
    "between",
    "update",
    "set",
    "delete",
    "insert",
    "into",
    "values",
    "returning",
    "union",
    "all",
    "distinct",
    "case",
    "when",
    "then",
    "else",
    "end",
    "true",
    "false",
    "lateral",
    "exists",
    "any",
    "asc",
    "desc",
    "with",
    "for",
];

fn is_keyword(word: &str) -> bool {
    KEYWORDS.contains(&word)
}

fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '$' || c.is_ascii_digit() {
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            out.push(Token::Value);
        } else if c == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push(Token::Value);
        } else if c.is_alphabetic() || c == '_' || c == '"' {
            let mut word = String::new();
            while i < chars.len() {
                let c = chars[i];
                if c == '"' {
                    i += 1;
                    while i < chars.len() && chars[i] != '"' {
                        word.push(chars[i]);
                        i += 1;
                    }
                    i += 1;
                } else if c.is_alphanumeric() || c == '_' || c == '.' {
                    word.push(c.to_ascii_lowercase());
                    i += 1;
                } else {
                    break;
                }
            }
            out.push(Token::Word(word));
        } else if c == '<' || c == '>' || c == '=' {
            let equal = c == '=';
            i += 1;
            if i < chars.len() && (chars[i] == '=' || chars[i] == '>') {
                // `<=`, `>=` (a range), `<>` (never an index's job).
                if chars[i] == '>' {
                    out.push(Token::Other('!'));
                    i += 1;
                    continue;
                }
                i += 1;
            }
            out.push(Token::Compare(equal));
        } else {
            out.push(Token::Other(c));
            i += 1;
        }
    }
    out
}

/// The tables after FROM / JOIN (and FROM's comma list), with aliases.
fn tables(tokens: &[Token]) -> Vec<TableUse> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let starts =
            matches!(&tokens[i], Token::Word(w) if w == "from" || w == "join" || w == "update");
        i += 1;
        if !starts {
            continue;
        }
        while let Some(Token::Word(name)) = tokens.get(i) {
            if is_keyword(name) {
                break;
            }
            let mut table = TableUse {
                name: name.clone(),
                alias: None,
            };
            i += 1;
            if matches!(tokens.get(i), Some(Token::Word(w)) if w == "as") {
                i += 1;
            }
            if let Some(Token::Word(alias)) = tokens.get(i)
                && !is_keyword(alias)
            {
                table.alias = Some(alias.clone());
                i += 1;
            }
            found.push(table);
            if matches!(tokens.get(i), Some(Token::Other(','))) {
                i += 1;
            } else {
                break;
            }
        }
    }
    found
}

/// The table (as written) a column reference belongs to, and the bare column name.
fn resolve(reference: &str, tables: &[TableUse]) -> Option<(String, String)> {
    match reference.rsplit_once('.') {
        Some((qualifier, column)) => tables
            .iter()
            .find(|t| {
                t.alias.as_deref() == Some(qualifier)
                    || t.name == qualifier
                    || t.name.rsplit_once('.').map(|(_, n)| n) == Some(qualifier)
            })
            .map(|t| (t.name.clone(), column.to_owned())),
        None => match tables {
            [only] => Some((only.name.clone(), reference.to_owned())),
            _ => None,
        },
    }
}

fn column_ref(token: Option<&Token>) -> Option<&str> {
    match token {
        Some(Token::Word(w)) if !is_keyword(w) => Some(w),
        _ => None,
    }
}

/// The index candidates of `text`: every compared column alone, and per table the first
/// two columns compared (equalities first) together, in the order they appear.
pub fn candidates(text: &str) -> Vec<Candidate> {
    let tokens = tokens(text);
    let tables = tables(&tokens);
    // (table, column, is an equality) in order of appearance.
    let mut compared: Vec<(String, String, bool)> = Vec::new();
    let mut note = |reference: &str, equal: bool| {
        if let Some((table, column)) = resolve(reference, &tables)
            && !compared.iter().any(|(t, c, _)| *t == table && *c == column)
        {
            compared.push((table, column, equal));
        }
    };
    for (i, token) in tokens.iter().enumerate() {
        let Token::Compare(equal) = token else {
            continue;
        };
        let left = i.checked_sub(1).and_then(|j| tokens.get(j));
        let right = tokens.get(i + 1);
        match (column_ref(left), column_ref(right)) {
            (Some(l), Some(r)) => {
                note(l, *equal);
                note(r, *equal);
            }
            (Some(column), None) if matches!(right, Some(Token::Value)) => note(column, *equal),
            (None, Some(column)) if matches!(left, Some(Token::Value)) => note(column, *equal),
            _ => {}
        }
    }
    let mut out: Vec<Candidate> = compared
        .iter()
        .map(|(table, column, _)| Candidate {
            table: table.clone(),
            columns: vec![column.clone()],
        })
        .collect();
    let mut seen_tables: Vec<&str> = Vec::new();
    for (table, _, _) in &compared {
        if seen_tables.contains(&table.as_str()) {
            continue;
        }
        seen_tables.push(table);
        let mut columns: Vec<(&String, bool)> = compared
            .iter()
            .filter(|(t, _, _)| t == table)
            .map(|(_, c, equal)| (c, *equal))
            .collect();
        // Equalities lead a B-tree index; a range can only follow them.
        columns.sort_by_key(|(_, equal)| !*equal);
        if columns.len() >= 2 {
            out.push(Candidate {
                table: table.clone(),
                columns: columns.iter().take(2).map(|(c, _)| (*c).clone()).collect(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(table: &str, columns: &[&str]) -> Candidate {
        Candidate {
            table: table.into(),
            columns: columns.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn where_columns_compared_with_parameters() {
        assert_eq!(
            candidates("SELECT * FROM orders WHERE customer_id = $1"),
            [c("orders", &["customer_id"])]
        );
        assert_eq!(
            candidates(
                "select id from shop.orders o where o.status = $1 and o.created_at >= $2 limit $3"
            ),
            [
                c("shop.orders", &["status"]),
                c("shop.orders", &["created_at"]),
                c("shop.orders", &["status", "created_at"]),
            ]
        );
    }

    #[test]
    fn a_range_follows_the_equalities_in_a_two_column_candidate() {
        let found = candidates("SELECT 1 FROM t WHERE a > $1 AND b = $2");
        assert!(found.contains(&c("t", &["b", "a"])), "{found:?}");
    }

    #[test]
    fn join_columns_belong_to_their_tables() {
        let found = candidates(
            "SELECT * FROM customers c JOIN orders AS o ON o.customer_id = c.id WHERE c.region = $1",
        );
        assert!(found.contains(&c("orders", &["customer_id"])), "{found:?}");
        assert!(found.contains(&c("customers", &["region"])), "{found:?}");
        assert!(
            found.contains(&c("customers", &["id", "region"])),
            "{found:?}"
        );
    }

    #[test]
    fn unqualified_columns_of_several_tables_and_inequalities_are_left_out() {
        assert_eq!(candidates("SELECT * FROM a, b WHERE x = $1"), []);
        assert_eq!(candidates("SELECT * FROM a WHERE x <> $1"), []);
        assert_eq!(candidates("SELECT pg_sleep($1)"), []);
    }

    #[test]
    fn quoted_identifiers_keep_their_case() {
        assert_eq!(
            candidates(r#"SELECT * FROM "Orders" WHERE "CustomerId" = $1"#),
            [c("Orders", &["CustomerId"])]
        );
    }
}
