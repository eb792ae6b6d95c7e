//! The chart's Grafana dashboard (`charts/freight/dashboards/freight.json`)
//! read as the tests need it: every panel's queries, its template
//! variables, and Grafana's variable substitution.

use serde_json::Value;

use crate::repo_root;

/// The dashboard JSON.
pub fn dashboard() -> Value {
    let path = repo_root().join("charts/freight/dashboards/freight.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every panel that is not a row, with the title of the row above it
/// (panels of collapsed rows included).
pub fn panels(dashboard: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut row = String::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        if p["type"] == "row" {
            row = p["title"].as_str().unwrap_or_default().to_owned();
            for nested in p["panels"].as_array().into_iter().flatten() {
                out.push((row.clone(), nested.clone()));
            }
        } else {
            out.push((row.clone(), p.clone()));
        }
    }
    out
}

/// One PromQL query of a panel.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    /// `Row / Panel title (refId)`, to name it in a failure.
    pub name: String,
    /// The PromQL, with Grafana's variables still in it.
    pub expr: String,
    /// Whether the panel is marked `"freightOptional": true`: it needs
    /// metrics that a release may not export yet (rollouts).
    pub optional: bool,
    /// A table/stat query Grafana runs as an instant query.
    pub instant: bool,
}

/// The queries of every panel.
pub fn panel_queries(dashboard: &Value) -> Vec<PanelQuery> {
    let mut out = Vec::new();
    for (row, p) in panels(dashboard) {
        let title = p["title"].as_str().unwrap_or_default();
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(PanelQuery {
                name: format!(
                    "{row} / {title} ({})",
                    t["refId"].as_str().unwrap_or_default()
                ),
                expr: t["expr"].as_str().unwrap_or_default().to_owned(),
                optional: p["freightOptional"] == true,
                instant: t["instant"] == true,
            });
        }
    }
    out
}

/// The `label_values(selector, label)` query variables: (name, selector, label).
pub fn label_values_variables(dashboard: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] != "query" {
            continue;
        }
        let query = v["query"]["query"]
            .as_str()
            .or_else(|| v["query"].as_str())
            .unwrap_or_default();
        let inner = query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {}: not label_values(...): {query}", v["name"]));
        let (selector, label) = inner
            .rsplit_once(',')
            .unwrap_or_else(|| panic!("variable {}: {query}", v["name"]));
        out.push((
            v["name"].as_str().unwrap_or_default().to_owned(),
            selector.trim().to_owned(),
            label.trim().to_owned(),
        ));
    }
    out
}

/// Replaces Grafana's variables in `expr` — `$name`, `${name}` — by their
/// values in `vars` (built-ins such as `__rate_interval` included); panics
/// on a variable `vars` does not have, so a query cannot reach Prometheus
/// with a `$` left in it.
pub fn substitute(expr: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .unwrap_or_else(|| panic!("unclosed ${{ in {expr}"));
            (&braced[..end], &braced[end + 1..])
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        let value = vars
            .iter()
            .find(|(k, _)| *k == name)
            .unwrap_or_else(|| panic!("unknown variable ${name} in {expr}"))
            .1;
        out.push_str(value);
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// The metric names a query reads (its `freight_…` identifiers).
pub fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(found) = expr[i..].find("freight_") {
        let start = i + found;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |e| start + e);
        if boundary {
            let name = &expr[start..end];
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
        i = end;
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution() {
        let vars = [
            ("job", "contacts"),
            ("__rate_interval", "10s"),
            ("namespace", "ns-1"),
        ];
        assert_eq!(
            substitute(
                r#"rate(x{namespace=~"$namespace", job=~"${job}"}[$__rate_interval])"#,
                &vars
            ),
            r#"rate(x{namespace=~"ns-1", job=~"contacts"}[10s])"#
        );
        assert_eq!(substitute("up", &vars), "up");
    }

    #[test]
    #[should_panic(expected = "unknown variable $jobs")]
    fn unknown_variables_are_refused() {
        substitute("x{job=~\"$jobs\"}", &[("job", "a")]);
    }

    #[test]
    fn metric_names_of_queries() {
        assert_eq!(
            metric_names(
                "histogram_quantile(0.5, sum by (le) (rate(freight_worker_batch_duration_seconds_bucket[1m])))\
                 / freight_job_eta_seconds + my_freight_x"
            ),
            [
                "freight_worker_batch_duration_seconds_bucket",
                "freight_job_eta_seconds"
            ]
        );
    }
}
