//! API-call counts from the API server's own `/metrics` (`apiserver_request_total`), not from the
//! gateway's counters: what the API server saw is what it paid for.

use std::collections::BTreeMap;

use kube::Client;

/// `apiserver_request_total` for resource `remediationrequests`, summed over every label except
/// `verb` and `subresource` (codes, scope, version… are folded together).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    /// (verb, subresource) → count.
    pub requests: BTreeMap<(String, String), f64>,
    /// `apiserver_longrunning_requests{verb="WATCH"}` for the resource: watches open right now.
    pub open_watches: f64,
    /// `apiserver_request_duration_seconds` (sum, count) by (verb, subresource): the API server's
    /// own time per request.
    pub durations: BTreeMap<(String, String), (f64, f64)>,
}

impl Counts {
    pub fn get(&self, verb: &str, subresource: &str) -> f64 {
        self.requests
            .get(&(verb.to_owned(), subresource.to_owned()))
            .copied()
            .unwrap_or(0.0)
    }

    /// `self - earlier`, per key.
    pub fn since(&self, earlier: &Counts) -> Counts {
        let mut requests = self.requests.clone();
        for (k, v) in &earlier.requests {
            *requests.entry(k.clone()).or_default() -= v;
        }
        requests.retain(|_, v| v.abs() > 1e-9);
        let mut durations = self.durations.clone();
        for (k, (sum, count)) in &earlier.durations {
            let d = durations.entry(k.clone()).or_default();
            d.0 -= sum;
            d.1 -= count;
        }
        durations.retain(|_, (_, count)| count.abs() > 1e-9);
        Counts {
            requests,
            open_watches: self.open_watches,
            durations,
        }
    }

    /// Mean API-server time of (verb, subresource) requests, in milliseconds.
    pub fn mean_ms(&self, verb: &str, subresource: &str) -> Option<f64> {
        let (sum, count) = self
            .durations
            .get(&(verb.to_owned(), subresource.to_owned()))?;
        (*count > 0.0).then(|| sum / count * 1000.0)
    }

    pub fn creates(&self) -> f64 {
        self.get("POST", "")
    }
    pub fn gets(&self) -> f64 {
        self.get("GET", "")
    }
    pub fn lists(&self) -> f64 {
        self.get("LIST", "")
    }
    pub fn watches(&self) -> f64 {
        self.get("WATCH", "")
    }
    /// Writes of the status subresource, whatever the verb (PATCH, APPLY, PUT).
    pub fn status_writes(&self) -> f64 {
        self.requests
            .iter()
            .filter(|((verb, sub), _)| sub == "status" && verb != "GET")
            .map(|(_, v)| v)
            .sum()
    }
    /// The calls a request waits for: create, get, list (watches and status writes are not).
    pub fn synchronous(&self) -> f64 {
        self.creates() + self.gets() + self.lists()
    }
    /// Everything, for "nothing else happened" checks.
    pub fn total(&self) -> f64 {
        self.requests.values().sum()
    }

    pub fn describe(&self) -> String {
        if self.requests.is_empty() {
            return "none".into();
        }
        self.requests
            .iter()
            .map(|((verb, sub), v)| {
                if sub.is_empty() {
                    format!("{verb} {v}")
                } else {
                    format!("{verb}/{sub} {v}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub async fn scrape(client: &Client) -> Result<Counts, String> {
    Ok(parse(&scrape_text(client).await?))
}

/// [`Counts`] of another resource (`pods`, `replicasets`, …), same folding.
pub async fn scrape_resource(client: &Client, resource: &str) -> Result<Counts, String> {
    Ok(parse_resource(&scrape_text(client).await?, resource))
}

async fn scrape_text(client: &Client) -> Result<String, String> {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    client
        .request_text(req)
        .await
        .map_err(|e| format!("reading the API server's /metrics: {e}"))
}

fn parse(text: &str) -> Counts {
    parse_resource(text, "remediationrequests")
}

fn parse_resource(text: &str, resource: &str) -> Counts {
    let mut counts = Counts::default();
    for line in text.lines() {
        let (name, rest) = match line.split_once('{') {
            Some(x) => x,
            None => continue,
        };
        if !matches!(
            name,
            "apiserver_request_total"
                | "apiserver_longrunning_requests"
                | "apiserver_request_duration_seconds_sum"
                | "apiserver_request_duration_seconds_count"
        ) {
            continue;
        }
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let labels = parse_labels(labels);
        if labels.get("resource").map(String::as_str) != Some(resource) {
            continue;
        }
        let verb = labels.get("verb").cloned().unwrap_or_default();
        let sub = labels.get("subresource").cloned().unwrap_or_default();
        match name {
            "apiserver_request_total" => *counts.requests.entry((verb, sub)).or_default() += value,
            "apiserver_request_duration_seconds_sum" => {
                counts.durations.entry((verb, sub)).or_default().0 += value
            }
            "apiserver_request_duration_seconds_count" => {
                counts.durations.entry((verb, sub)).or_default().1 += value
            }
            _ if verb == "WATCH" => counts.open_watches += value,
            _ => {}
        }
    }
    counts
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(match n {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').trim().to_owned(), value);
        rest = &after[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_by_verb_and_subresource_for_rrs_only() {
        let text = r#"
# TYPE apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",dry_run="",group="kubernaut.ai",resource="remediationrequests",scope="resource",subresource="",verb="POST",version="v1alpha1"} 200
apiserver_request_total{code="409",component="apiserver",dry_run="",group="kubernaut.ai",resource="remediationrequests",scope="resource",subresource="",verb="POST",version="v1alpha1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="kubernaut.ai",resource="remediationrequests",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 7
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="namespaces",scope="resource",subresource="",verb="POST",version="v1"} 9
apiserver_longrunning_requests{component="apiserver",group="kubernaut.ai",resource="remediationrequests",scope="namespace",subresource="",verb="WATCH",version="v1alpha1"} 1
"#;
        let c = parse(text);
        assert_eq!(c.creates(), 203.0);
        assert_eq!(c.status_writes(), 7.0);
        assert_eq!(c.open_watches, 1.0);
        assert_eq!(c.total(), 210.0);
        let later = Counts {
            requests: [(("POST".into(), "".into()), 210.0)].into(),
            open_watches: 1.0,
            durations: Default::default(),
        };
        let d = later.since(&c);
        assert_eq!(d.creates(), 7.0);
        assert_eq!(d.status_writes(), -7.0);
    }

    #[test]
    fn label_values_may_contain_escapes_and_commas() {
        let l = parse_labels(r#"a="x,\"y\"",b="",c="z""#);
        assert_eq!(l["a"], "x,\"y\"");
        assert_eq!(l["b"], "");
        assert_eq!(l["c"], "z");
    }
}
