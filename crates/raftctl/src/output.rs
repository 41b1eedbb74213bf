//! How `raftctl` prints results.

use std::io::{self, Write};

use raftctl::ClientError;
use serde_json::{Value, json};
use transport::NodeStatus;

pub fn write_json(out: &mut impl Write, value: &Value) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)
}

/// Writes a JSON array with one object per endpoint: the status fields and
/// `endpoint`, or `endpoint` and `error` for an endpoint that failed.
pub fn write_status_json(
    out: &mut impl Write,
    rows: &[(String, Result<NodeStatus, ClientError>)],
) -> io::Result<()> {
    let objects: Vec<Value> = rows
        .iter()
        .map(|(endpoint, result)| match result {
            Ok(status) => json!({
                "endpoint": endpoint,
                "id": status.id,
                "role": status.role,
                "term": status.term,
                "leader_id": status.leader_id,
                "commit_index": status.commit_index,
                "applied_index": status.applied_index,
            }),
            Err(error) => json!({ "endpoint": endpoint, "error": error.to_string() }),
        })
        .collect();
    write_json(out, &Value::Array(objects))
}

pub fn write_status_table(
    out: &mut impl Write,
    rows: &[(String, Result<NodeStatus, ClientError>)],
) -> io::Result<()> {
    let header = [
        "ENDPOINT", "ID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "ERROR",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(endpoint, result)| match result {
            Ok(status) => vec![
                endpoint.clone(),
                status.id.to_string(),
                status.role.to_string(),
                status.term.to_string(),
                status.leader_id.map_or("-".to_owned(), |id| id.to_string()),
                status.commit_index.to_string(),
                status.applied_index.to_string(),
                String::new(),
            ],
            Err(error) => {
                let mut row = vec![endpoint.clone()];
                row.extend(std::iter::repeat_n("-".to_owned(), 6));
                row.push(error.to_string());
                row
            }
        })
        .collect();

    let mut widths: Vec<usize> = header.iter().map(|name| name.len()).collect();
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let header: Vec<String> = header.iter().map(|name| name.to_string()).collect();
    for row in std::iter::once(&header).chain(&cells) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}
