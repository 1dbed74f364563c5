//! Output of client commands: aligned tables for people (columns picked with `-c`, any JSON
//! field is a column) and JSON for scripts (`-o json`, pipes into `jq`).

use std::io::IsTerminal;

use clap::ValueEnum;
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
/// row's cell for a column key, as plain text. The layout is computed on that plain text and
/// the `status` column is coloured afterwards (on a terminal), so colour codes never count as
/// width and never misalign a table.
pub fn table<R>(columns: &[String], rows: &[R], extract: impl Fn(&R, &str) -> String) -> String {
    render_table(columns, rows, extract, colour_enabled())
}

/// [`table`] with colour decided by the caller.
pub fn render_table<R>(
    columns: &[String],
    rows: &[R],
    extract: impl Fn(&R, &str) -> String,
    colour: bool,
) -> String {
    let header: Vec<String> = columns
        .iter()
        .map(|c| c.replace('_', " ").to_ascii_uppercase())
        .collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| extract(row, c).replace(['\n', '\r'], " "))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            std::iter::once(&header[i])
                .chain(cells.iter().map(|r| &r[i]))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |row: &[String], paint: bool| {
        let mut out = String::new();
        for (i, text) in row.iter().enumerate() {
            let pad = " ".repeat(widths[i] - text.chars().count());
            out.push(' ');
            if paint && columns[i] == "status" {
                out.push_str(&colour_status(text));
            } else {
                out.push_str(text);
            }
            out.push_str(&pad);
            out.push(' ');
        }
        out.trim_end().to_string()
    };
    std::iter::once(line(&header, false))
        .chain(cells.iter().map(|r| line(r, colour)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether stdout shows colours: a terminal, and `NO_COLOR` unset.
pub fn colour_enabled() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// How long ago `at` (RFC 3339) was, in the largest unit that fits: `12s ago`, `3m ago`,
/// `5h ago`, `2d ago`. Unparsable text is returned as it is.
pub fn ago(at: &str) -> String {
    let Ok(then) = chrono::DateTime::parse_from_rfc3339(at) else {
        return at.to_string();
    };
    let secs = (chrono::Utc::now() - then.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..172_800 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
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

/// [`print_list`] with the table drawn from the rows decoded as `R` (a `wire` answer type), so
/// its cells read fields instead of indexing JSON; `-o json` still prints what the server sent.
pub fn print_typed<R: serde::de::DeserializeOwned>(
    format: Format,
    list: &Value,
    empty: &str,
    columns: &[String],
    extract: impl Fn(&R, &str) -> String,
) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", json(list)),
        Format::Table => {
            let rows: Vec<R> = serde_json::from_value(list.clone())?;
            if rows.is_empty() {
                println!("{empty}");
            } else {
                println!("{}", table(columns, &rows, extract));
            }
        }
    }
    Ok(())
}

/// Column names as owned strings.
pub fn columns(names: &[&str]) -> Vec<String> {
    names.iter().map(|c| c.to_string()).collect()
}

/// Pretty JSON with a trailing newline.
pub fn json(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("JSON values serialise")
}

/// A status in its colour (ANSI), whatever the output is.
pub fn colour_status(status: &str) -> String {
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

    #[test]
    fn colours_do_not_count_as_width() {
        let rows = vec![
            json!({"status": "succeeded", "id": "a"}),
            json!({"status": "pending", "id": "b"}),
        ];
        let cols = vec!["status".to_string(), "id".to_string()];
        let plain = render_table(&cols, &rows, |r, c| cell(&r[c]), false);
        let coloured = render_table(&cols, &rows, |r, c| cell(&r[c]), true);
        assert!(coloured.contains("\x1b[32msucceeded\x1b[0m"), "{coloured}");
        let stripped = coloured.replace("\x1b[32m", "").replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
    }
}
