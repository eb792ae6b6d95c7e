//! The SQL of a batch copy: quoting, the `COPY ... TO STDOUT` that reads a
//! batch from the source, and the `INSERT ... SELECT [ON CONFLICT]` that
//! writes staged rows to the target. Pure string building, tested as such.

use super::{
    catalog::{Column, TableRef},
    copy::{CopySpec, Rows},
    error::PgError,
};
use crate::api::WriteMode;

/// Name of the per-session staging table on the target.
pub(super) const STAGING: &str = "freight_staging";
/// Ordinal column of the staging table (COPY order), used to bisect.
pub(super) const ORDINAL: &str = "freight_ord";

/// Quotes an identifier (`"a""b"`), so any name is taken literally.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal in the escape-string form, which means the same
/// whatever `standard_conforming_strings` is set to.
pub fn quote_literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// `"schema"."table"`.
pub fn qualified(t: &TableRef) -> String {
    format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.table))
}

pub(super) fn column_list(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

impl CopySpec {
    /// Whether the target's columns take the copied columns' binary data
    /// as-is: same names, same types.
    pub fn same_types(copied: &[Column], target: &[Column]) -> bool {
        copied.iter().all(|c| target.iter().any(|t| t == c))
    }

    fn key_type(&self) -> Result<&str, PgError> {
        self.columns
            .iter()
            .find(|c| c.name == self.key_column)
            .map(|c| c.type_sql.as_str())
            .ok_or_else(|| {
                PgError::config(
                    "plan copy",
                    format!(
                        "key column {} is not among the copied columns",
                        self.key_column
                    ),
                )
            })
    }

    /// The `COPY ... TO STDOUT` statement reading a batch from the source.
    pub fn copy_out_sql(&self, rows: &Rows<'_>) -> Result<String, PgError> {
        let key = quote_ident(&self.key_column);
        let key_type = self.key_type()?;
        let mut predicates = Vec::new();
        match rows {
            Rows::Range { lower, upper } => {
                if let Some(lo) = lower {
                    predicates.push(format!("{key} >= {}::{key_type}", quote_literal(lo)));
                }
                if let Some(hi) = upper {
                    predicates.push(format!("{key} < {}::{key_type}", quote_literal(hi)));
                }
            }
            Rows::Keys(keys) => {
                let list: Vec<String> = keys
                    .iter()
                    .map(|k| format!("{}::{key_type}", quote_literal(k)))
                    .collect();
                // An empty key list selects nothing.
                predicates.push(if list.is_empty() {
                    "false".to_owned()
                } else {
                    format!("{key} IN ({})", list.join(", "))
                });
            }
        }
        let filter = if predicates.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", predicates.join(" AND "))
        };
        Ok(format!(
            "COPY (SELECT {} FROM {}{filter}) TO STDOUT (FORMAT binary)",
            column_list(&self.columns),
            qualified(&self.source)
        ))
    }

    /// The statement writing staging rows with ordinals in `[$1, $2)` to the target.
    pub fn write_sql(&self) -> String {
        let cols = column_list(&self.columns);
        let insert = format!(
            "INSERT INTO {} ({cols}) SELECT {cols} FROM {STAGING} WHERE {ORDINAL} >= $1 AND {ORDINAL} < $2",
            qualified(&self.target)
        );
        match self.mode {
            WriteMode::Insert => insert,
            WriteMode::Upsert => {
                let updates: Vec<String> = self
                    .columns
                    .iter()
                    .filter(|c| c.name != self.key_column)
                    .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(&c.name)))
                    .collect();
                let action = if updates.is_empty() {
                    "NOTHING".to_owned()
                } else {
                    format!("UPDATE SET {}", updates.join(", "))
                };
                format!(
                    "{insert} ON CONFLICT ({}) DO {action}",
                    quote_ident(&self.key_column)
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mode: WriteMode) -> CopySpec {
        CopySpec {
            source: TableRef {
                schema: "public".into(),
                table: "Con\"tacts".into(),
            },
            target: TableRef {
                schema: "crm".into(),
                table: "contacts".into(),
            },
            key_column: "id".into(),
            columns: vec![
                Column {
                    name: "id".into(),
                    type_sql: "bigint".into(),
                },
                Column {
                    name: "name".into(),
                    type_sql: "text".into(),
                },
            ],
            mode,
            direct: false,
        }
    }

    #[test]
    fn literals_and_identifiers_are_quoted() {
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(quote_literal(r"it's a \ test"), r"E'it''s a \\ test'");
    }

    #[test]
    fn copy_out_bounds_are_half_open_and_typed() {
        let s = spec(WriteMode::Upsert);
        assert_eq!(
            s.copy_out_sql(&Rows::Range {
                lower: Some("-5"),
                upper: Some("10")
            })
            .unwrap(),
            r#"COPY (SELECT "id", "name" FROM "public"."Con""tacts" WHERE "id" >= E'-5'::bigint AND "id" < E'10'::bigint) TO STDOUT (FORMAT binary)"#
        );
        assert!(
            !s.copy_out_sql(&Rows::Range {
                lower: None,
                upper: None
            })
            .unwrap()
            .contains("WHERE")
        );
        let keys = vec!["7".to_owned(), "o'k".to_owned()];
        assert!(
            s.copy_out_sql(&Rows::Keys(&keys))
                .unwrap()
                .contains(r#""id" IN (E'7'::bigint, E'o''k'::bigint)"#)
        );
        assert!(
            s.copy_out_sql(&Rows::Keys(&[]))
                .unwrap()
                .contains("WHERE false")
        );
    }

    #[test]
    fn upsert_updates_every_non_key_column() {
        assert!(
            spec(WriteMode::Upsert)
                .write_sql()
                .ends_with(r#"ON CONFLICT ("id") DO UPDATE SET "name" = EXCLUDED."name""#)
        );
        assert!(!spec(WriteMode::Insert).write_sql().contains("ON CONFLICT"));
    }
}
