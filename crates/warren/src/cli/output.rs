//! Output of client commands: aligned tables for people, JSON (`--json`) for scripts.

use serde::Serialize;

/// A table printed with columns padded to their widest cell.
#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, headers first.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let line = |cells: Vec<&str>| {
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    out.push_str(cell);
                } else {
                    let pad = widths.get(i).copied().unwrap_or(0);
                    out.push_str(&format!("{cell:<pad$}  "));
                }
            }
            out.trim_end().to_owned()
        };
        let mut out = line(self.headers.clone());
        for row in &self.rows {
            out.push('\n');
            out.push_str(&line(row.iter().map(String::as_str).collect()));
        }
        out
    }

    pub fn print(&self) {
        println!("{}", self.render());
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A timestamp for tables, `YYYY-MM-DD HH:MM:SS` in UTC. Goes through the RFC 3339 form
/// that the wire types serialize to, so this binary needs no date library of its own.
pub fn time<T: Serialize>(t: &T) -> String {
    let text = match serde_json::to_value(t) {
        Ok(serde_json::Value::String(s)) => s,
        _ => return "?".to_owned(),
    };
    match text.get(..19) {
        Some(head) => head.replacen('T', " ", 1),
        None => text,
    }
}

/// `k=v,k2=v2` for a metadata map, `-` when empty.
pub fn pairs<'a>(map: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let text: Vec<String> = map.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_all_but_the_last_column() {
        let mut t = Table::new(&["ID", "STATE"]);
        t.row(vec!["abcdef".into(), "running".into()]);
        t.row(vec!["x".into(), "paused".into()]);
        assert_eq!(t.render(), "ID      STATE\nabcdef  running\nx       paused");
    }

    #[test]
    fn times_are_cut_to_the_second() {
        assert_eq!(time(&"2026-12-03T14:23:50.061740Z"), "2026-12-03 14:23:50");
        assert_eq!(time(&"short"), "short");
        assert_eq!(time(&1), "?");
    }
}
