//! Output of client commands: aligned tables for people (columns picked with `-c`, any JSON
//! field is a column) and JSON for scripts (`-o json`, pipes into `jq`).

use std::io::IsTerminal;

use clap::ValueEnum;
use comfy_table::{ContentArrangement, Table, presets};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// Normalises a column name: `created at`, `Created-At` and `created_at` are one column.
pub fn column_key(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace([' ', '-'], "_")
}

/// A cell: strings as they are, maps as `k=v` pairs, nothing as empty.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                )
            })
            .collect::<Vec<_>>()
            .join(" "),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Renders `rows` as a borderless aligned table with upper-case headers. `extract` produces a
/// row's cell for a column key.
pub fn table(
    columns: &[String],
    rows: &[Value],
    extract: impl Fn(&Value, &str) -> String,
) -> String {
    let mut t = Table::new();
    t.load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(
            columns
                .iter()
                .map(|c| c.replace('_', " ").to_ascii_uppercase()),
        );
    for row in rows {
        t.add_row(columns.iter().map(|c| extract(row, c)));
    }
    t.lines()
        .map(|l| l.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Prints a list the server answered: as JSON, as `empty` when it has no rows, or as a table
/// of `columns` with cells from `extract`.
pub fn print_list(
    format: Format,
    list: &Value,
    empty: &str,
    columns: &[String],
    extract: impl Fn(&Value, &str) -> String,
) {
    let rows = list.as_array().cloned().unwrap_or_default();
    match format {
        Format::Json => println!("{}", json(list)),
        Format::Table if rows.is_empty() => println!("{empty}"),
        Format::Table => println!("{}", table(columns, &rows, extract)),
    }
}

/// Column names as owned strings.
pub fn columns(names: &[&str]) -> Vec<String> {
    names.iter().map(|c| c.to_string()).collect()
}

/// Pretty JSON with a trailing newline.
pub fn json(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("JSON values serialise")
}

/// Colour for statuses, only on a terminal and unless NO_COLOR is set.
pub fn paint_status(status: &str) -> String {
    let tty = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    if !tty {
        return status.to_string();
    }
    let code = match status {
        "succeeded" | "idle" => "32",
        "failed" | "offline" => "31",
        "running" | "busy" => "36",
        "canceling" | "canceled" => "33",
        _ => return status.to_string(),
    };
    format!("\x1b[{code}m{status}\x1b[0m")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cells_flatten_maps_and_lists() {
        assert_eq!(cell(&json!({"a": "1", "b": "2"})), "a=1 b=2");
        assert_eq!(cell(&json!(["x", "y"])), "x,y");
        assert_eq!(cell(&json!(null)), "");
        assert_eq!(cell(&json!(3)), "3");
        assert_eq!(column_key("Created At"), "created_at");
    }

    #[test]
    fn tables_align_without_borders() {
        let rows = vec![
            json!({"id": "a", "status": "pending"}),
            json!({"id": "bbb", "status": "ok"}),
        ];
        let cols = vec!["id".to_string(), "status".to_string()];
        let out = table(&cols, &rows, |r, c| cell(&r[c]));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains("ID") && lines[0].contains("STATUS"));
        assert_eq!(lines[1].find("pending"), lines[2].find("ok"));
    }
}
