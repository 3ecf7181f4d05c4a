//! Start order of a set of services: each after the services it calls, cycles refused
//! with the cycle named.

use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OrderError {
    #[error("{service} calls {missing}, which is not among the services to start ({known})")]
    Missing {
        service: String,
        missing: String,
        known: String,
    },
    #[error("the services call each other in a cycle: {0}")]
    Cycle(String),
}

/// The order to start `services` (`(name, calls)`), dependencies first; `external` are
/// services already running elsewhere (they satisfy a dependency without being started).
pub fn start_order<'a>(
    services: &[(&'a str, &[&'a str])],
    external: &[&str],
) -> Result<Vec<&'a str>, OrderError> {
    let deps: BTreeMap<&str, &[&str]> = services.iter().map(|(n, d)| (*n, *d)).collect();
    for (name, calls) in services {
        for c in calls.iter() {
            if !deps.contains_key(c) && !external.contains(c) {
                return Err(OrderError::Missing {
                    service: (*name).to_owned(),
                    missing: (*c).to_owned(),
                    known: deps
                        .keys()
                        .copied()
                        .chain(external.iter().copied())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Visiting,
        Done,
    }
    fn visit<'a>(
        n: &'a str,
        deps: &BTreeMap<&'a str, &[&'a str]>,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
        out: &mut Vec<&'a str>,
    ) -> Result<(), OrderError> {
        match marks.get(n).copied().unwrap_or(Mark::New) {
            Mark::Done => return Ok(()),
            Mark::Visiting => {
                let start = path.iter().position(|p| *p == n).unwrap_or(0);
                let mut cycle: Vec<&str> = path[start..].to_vec();
                cycle.push(n);
                return Err(OrderError::Cycle(cycle.join(" -> ")));
            }
            Mark::New => {}
        }
        marks.insert(n, Mark::Visiting);
        path.push(n);
        if let Some(ds) = deps.get(n) {
            for d in ds.iter() {
                if deps.contains_key(d) {
                    visit(d, deps, marks, path, out)?;
                }
            }
        }
        path.pop();
        marks.insert(n, Mark::Done);
        out.push(n);
        Ok(())
    }
    let mut marks = BTreeMap::new();
    let mut out = Vec::new();
    for (n, _) in services {
        visit(n, &deps, &mut marks, &mut Vec::new(), &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_first() {
        let order = start_order(
            &[
                ("blog", &["notes", "authz"]),
                ("notes", &["authz"]),
                ("authz", &[]),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(order, ["authz", "notes", "blog"]);
    }

    #[test]
    fn cycles_and_missing_are_named() {
        let err = start_order(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])], &[]).unwrap_err();
        assert_eq!(err, OrderError::Cycle("a -> b -> c -> a".into()));
        let err = start_order(&[("a", &["nope"])], &["authz"]).unwrap_err();
        assert!(err.to_string().contains("a calls nope"), "{err}");
        assert!(start_order(&[("a", &["authz"])], &["authz"]).is_ok());
    }
}
