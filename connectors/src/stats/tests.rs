use super::*;

#[test]
fn exposition_has_labels_a_cumulative_histogram_and_well_formed_lines() {
    let s = Arc::new(Stats::default());
    s.set_line("granulation-1");
    s.observe_commit(Duration::from_micros(300));
    s.observe_commit(Duration::from_millis(20));
    let (a, b) = (s.source("plc-a"), s.source("plc-b"));
    s.count(&a, SourceEvent::Samples, 7);
    s.count(&b, SourceEvent::Samples, 2);
    s.count(&b, SourceEvent::Gap, 1);
    s.count(&b, SourceEvent::Reconnect, 1);
    let c = s.source("plc-c");
    SourceStats { all: &s, own: &c }.link_up();
    Stats::set(&s.upstream_mode, 2);
    Stats::add(&s.live_events_dropped, 3);
    s.set_build_info(&[("version", "0.1.0"), ("commit", "abc123")]);
    assert_eq!(Stats::get(&s.samples_in), 9, "the agent-wide total follows");
    let text = s.render_prometheus();
    for want in [
        "# TYPE pdtf_source_samples_total counter\n",
        "pdtf_source_samples_total{line=\"granulation-1\",source=\"plc-a\"} 7\n",
        "pdtf_source_samples_total{line=\"granulation-1\",source=\"plc-b\"} 2\n",
        "pdtf_source_gaps_total{line=\"granulation-1\",source=\"plc-b\"} 1\n",
        "pdtf_journal_last_seq{line=\"granulation-1\"} 0\n",
        "pdtf_source_connected{line=\"granulation-1\",source=\"plc-a\"} 1\n",
        "pdtf_source_connected{line=\"granulation-1\",source=\"plc-b\"} 0\n",
        "pdtf_source_connected{line=\"granulation-1\",source=\"plc-c\"} 1\n",
        "pdtf_upstream_mode{line=\"granulation-1\"} 2\n",
        "pdtf_upstream_live_events_dropped_total{line=\"granulation-1\"} 3\n",
        "pdtf_build_info{line=\"granulation-1\",version=\"0.1.0\",commit=\"abc123\"} 1\n",
        "# TYPE pdtf_journal_commit_duration_seconds histogram\n",
        "pdtf_journal_commit_duration_seconds_bucket{line=\"granulation-1\",le=\"0.0005\"} 1\n",
        "pdtf_journal_commit_duration_seconds_bucket{line=\"granulation-1\",le=\"0.025\"} 2\n",
        "pdtf_journal_commit_duration_seconds_bucket{line=\"granulation-1\",le=\"+Inf\"} 2\n",
        "pdtf_journal_commit_duration_seconds_count{line=\"granulation-1\"} 2\n",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    assert!(
        !text.contains("pdtf_clock_synchronized"),
        "absent while unknown"
    );
    let age = |source: &str| -> Option<f64> {
        let key = format!(
            "pdtf_source_last_sample_age_seconds{{line=\"granulation-1\",source=\"{source}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .map(|v| v.parse().unwrap())
    };
    assert!(
        age("plc-a").is_some_and(|a| (0.0..60.0).contains(&a)),
        "{text}"
    );
    assert_eq!(age("plc-c"), None, "no age before the first sample");
    // Every sample line: a pdtf_ name, labels, a number; every name has one HELP and TYPE.
    let mut typed = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            assert!(
                typed.insert(rest.split(' ').next().unwrap().to_owned()),
                "{line}"
            );
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(
            name.starts_with("pdtf_") && name.contains("{line="),
            "{line}"
        );
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    assert!(typed.len() >= 25, "{typed:?}");
}

/// Every metric name (`pdtf_` and lowercase, digits, `_`) in a text.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    text.match_indices("pdtf_")
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

/// The names exported, rendered with every conditional family present.
fn exported() -> (std::collections::BTreeSet<String>, String) {
    let s = Arc::new(Stats::default());
    s.set_line("l1");
    s.set_build_info(&[("version", "0")]);
    Stats::set_flag(&s.clock_sync_known, true);
    let src = s.source("plc");
    s.count(&src, SourceEvent::Samples, 1);
    Stats::add(&src.modbus.requests, 1);
    s.line_alarms
        .lock()
        .unwrap()
        .insert("l1".into(), super::LineAlarms::default());
    let text = s.render_prometheus();
    let names = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|n| n.strip_suffix("_bucket").unwrap_or(n))
        .map(|n| n.strip_suffix("_count").unwrap_or(n))
        .map(|n| n.strip_suffix("_sum").unwrap_or(n))
        .map(str::to_owned)
        .collect();
    (names, text)
}

/// Every metric the shipped Grafana dashboard (config/grafana/pdtf-edge.json) queries is
/// one the agent exports, under that exact name: a renamed metric breaks this test, not
/// a plant's dashboard.
#[test]
fn the_grafana_dashboard_queries_only_exported_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../../config/grafana/pdtf-edge.json"))
            .expect("the dashboard is JSON");
    let (exported, text) = exported();
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for t in targets {
            let name = metric_names(t["expr"].as_str().expect("expr"));
            queried.extend(
                name.into_iter()
                    .map(|n| n.strip_suffix("_bucket").map_or(n.clone(), str::to_owned)),
            );
        }
    }
    assert!(queried.len() >= 20, "{queried:?}");
    let missing: Vec<_> = queried.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "queried, not exported: {missing:?}\n{text}"
    );
}

/// Every metric the README names is exported, and every exported one is in the README.
#[test]
fn the_readme_lists_exactly_the_exported_metrics() {
    let (exported, text) = exported();
    let mut listed = metric_names(include_str!("../../../README.md"));
    listed.remove("pdtf_models"); // the crate, not a metric
    let missing: Vec<_> = listed.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "in the README, not exported: {missing:?}\n{text}"
    );
    let unlisted: Vec<_> = exported.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "exported, not in the README: {unlisted:?}"
    );
}

#[test]
fn a_source_on_another_line_carries_that_lines_label_and_agent_metrics_the_agents() {
    let s = Arc::new(Stats::default());
    s.set_line("gateway-1");
    s.set_source_line("coater", "coating");
    let (own, other) = (s.source("plc"), s.source("coater"));
    s.count(&own, SourceEvent::Samples, 4);
    s.count(&other, SourceEvent::Samples, 5);
    let text = s.render_prometheus();
    for want in [
        "pdtf_source_samples_total{line=\"gateway-1\",source=\"plc\"} 4\n",
        "pdtf_source_samples_total{line=\"coating\",source=\"coater\"} 5\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // One HELP and one TYPE per family, however many lines.
    let types = text
        .lines()
        .filter(|l| *l == "# TYPE pdtf_source_samples_total counter")
        .count();
    assert_eq!(types, 1);
}
