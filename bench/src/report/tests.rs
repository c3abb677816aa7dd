//! Tests of the report: parsing, arithmetic and the prose it writes.

use super::*;
use crate::stats::{LatencySummary, Params};

fn traffic(mode: &str, rate: u64, pps: f64, lat: Option<f64>) -> RunResult {
    RunResult::Traffic(TrafficReport {
        mode: mode.into(),
        params: Params {
            rate,
            ..Default::default()
        },
        received_pps: pps,
        sent_pps: pps,
        loss: Some(0.0),
        latency: lat.map(|p50| LatencySummary {
            count: 100,
            min_us: p50 / 2.0,
            mean_us: p50,
            p50_us: p50,
            p90_us: p50 * 1.5,
            p99_us: p50 * 2.0,
            p999_us: p50 * 3.0,
            max_us: p50 * 4.0,
            percentiles: vec![
                (0.0, p50 / 2.0),
                (0.5, p50),
                (0.99, p50 * 2.0),
                (1.0, p50 * 4.0),
            ],
        }),
        ..Default::default()
    })
}

#[test]
fn different_offered_rates_get_their_own_row() {
    let mut res: Results = BTreeMap::new();
    for (s, rate) in [("coturn", 90_000u64), ("xturn", 120_000)] {
        res.entry(s.into()).or_default().insert(
            "relay-sustained".into(),
            traffic("relay", rate, rate as f64, None),
        );
    }
    let a = Meta {
        command: "c".into(),
        date: "d".into(),
        notes: String::new(),
        commands: Vec::new(),
    };
    let (md, _) = render_markdown(&res, &BTreeMap::new(), &a, "l.svg", "m");
    assert!(
        md.contains(
            "| relay-sustained: offered pps ↑ | 90,000 | 120,000 | – | – | – | 1.33× | – | – | – | – | – |"
        ),
        "{md}"
    );
    assert!(
        md.contains("relay-sustained: sent pps (offered rate per column above)"),
        "{md}"
    );
}

#[test]
fn meta_from_the_results_directory() {
    let dir = std::env::temp_dir().join(format!("xtb-meta-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut a = ReportArgs {
        dir: dir.clone(),
        out: "o".into(),
        svg: "s".into(),
        command: None,
        date: Some("today".into()),
        notes: None,
    };
    assert!(Meta::resolve(&a).is_err(), "no command anywhere");
    std::fs::write(dir.join("command.txt"), "bash bench/compare.sh\n").unwrap();
    std::fs::write(dir.join("notes.md"), "notes").unwrap();
    let m = Meta::resolve(&a).unwrap();
    assert_eq!(
        (m.command.as_str(), m.date.as_str(), m.notes.as_str()),
        ("bash bench/compare.sh", "today", "notes")
    );
    a.command = Some("other".into());
    assert_eq!(Meta::resolve(&a).unwrap().command, "other");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn interference_file() {
    let m = parse_interference("coturn-stun 3 12\nxturn-relay-50k 242 12\nbad line\n");
    assert_eq!(m.len(), 1);
    assert_eq!(m.get("xturn-relay-50k"), Some(&242));
}

#[test]
fn names_and_order() {
    assert_eq!(
        split_name("coturn-relay-20k.json"),
        Some(("coturn".into(), "relay-20k".into()))
    );
    assert_eq!(
        split_name("coturn-upstream-relay-20k.json"),
        Some(("coturn-upstream".into(), "relay-20k".into()))
    );
    assert_eq!(split_name("x.json"), None);
    assert_eq!(split_name("coturn-stun.txt"), None);
    let r1 = traffic("relay", 0, 1.0, None);
    let r2 = traffic("relay", 20_000, 1.0, None);
    let s = traffic("stun", 0, 1.0, None);
    assert!(test_order("stun", Some(&s)) < test_order("relay-max", Some(&r1)));
    assert!(test_order("relay-max", Some(&r1)) < test_order("relay-20k", Some(&r2)));
    assert_eq!(ratio(Some(2.0), Some(1.0)), "2.00×");
    assert_eq!(ratio(Some(2.0), None), "–");
    assert_eq!(ratio(Some(0.0), Some(0.0)), "=");
    assert_eq!(f0(1234567.0), "1,234,567");
    assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    assert_eq!(median(vec![]), None);
    assert_eq!(f0(999.0), "999");
}

#[test]
fn parse_by_mode() {
    let t = serde_json::to_string(&TrafficReport {
        mode: "echo".into(),
        ..Default::default()
    })
    .unwrap();
    assert!(matches!(
        parse_result(&t).unwrap(),
        Some(RunResult::Traffic(_))
    ));
    let c = serde_json::to_string(&ChurnReport {
        mode: "churn".into(),
        ..Default::default()
    })
    .unwrap();
    assert!(matches!(
        parse_result(&c).unwrap(),
        Some(RunResult::Churn(_))
    ));
    assert!(parse_result(r#"{"mode":"sink"}"#).unwrap().is_none());
    assert!(parse_result(r#"{"mode":"x"}"#).is_err());
}

#[test]
fn markdown_has_every_server() {
    let mut res: Results = BTreeMap::new();
    for (s, pps, lat) in [
        ("coturn", 100_000.0, 40.0),
        ("xturn", 150_000.0, 30.0),
        ("xturn-afxdp", 450_000.0, 20.0),
        ("coturn-upstream", 120_000.0, 35.0),
        ("reflector", 300_000.0, 10.0),
    ] {
        let m = res.entry(s.into()).or_default();
        m.insert("relay-max".into(), traffic("relay", 0, pps, None));
        m.insert(
            "echo-20k".into(),
            traffic("echo", 20_000, 20_000.0, Some(lat)),
        );
    }
    let a = Meta {
        command: "bash bench/compare.sh".into(),
        date: "2026-01-01".into(),
        notes: "topology".into(),
        commands: Vec::new(),
    };
    let mut disturbed = BTreeMap::new();
    disturbed.insert("xturn-echo-20k".to_string(), 99u64);
    let (md, svg) = render_markdown(&res, &disturbed, &a, "latency.svg", "2 CPUs");
    assert!(md.contains("`bash bench/compare.sh`"));
    assert!(md.contains("2026-01-01") && md.contains("2 CPUs"));
    // 150k / 100k
    assert!(
        md.contains(
            "| relay-max: received at peer pps ↑ | 100,000 | 150,000 | – | 450,000 | 120,000 | 1.50× | – | 3.00× | 4.50× | 1.25× | 3.75× |"
        ),
        "{md}"
    );
    // Latency ratio 30/40.
    assert!(
        md.contains(
            "| echo-20k: RTT p50 µs ↓ | 40.0 | 30.0 ⚠ | – | 20.0 | 35.0 | 0.75× | – | 0.67× | 0.50× | 0.86× | 0.57× |"
        ),
        "{md}"
    );
    assert!(md.contains("xturn-echo-20k (99 jiffies)"), "{md}");
    assert!(md.contains("The generator's ceiling"));
    assert!(
        md.contains("| relay-max | flat out | 300,000 | 300,000 |"),
        "{md}"
    );
    assert!(md.contains("![HDR latency percentile plot](latency.svg)"));
    assert!(md.contains("## xturn-xdp"));
    assert!(md.contains("## xturn-afxdp"));
    // Relay rows come before echo rows.
    assert!(md.find("relay-max:").unwrap() < md.find("echo-20k:").unwrap());
    assert!(!md.contains("offered pps |"));
    assert_eq!(svg.matches("<polyline").count(), 5);
    assert!(svg.contains("reflector (generator floor)") && svg.contains("xturn-afxdp"));
}

fn xdp_load(handled_pps: f64, ns: f64, dropped: u64) -> RunResult {
    use crate::cpu::CpuReport;
    let t = TrafficReport {
        mode: "xdp-load".into(),
        params: Params {
            size: 70,
            ..Default::default()
        },
        sent: 30_000_000,
        sent_pps: 5_000_000.0,
        received_pps: handled_pps / 2.0,
        cpu: Some(CpuReport {
            cpus: vec![1],
            busy: 0.8,
            busy_seconds: 4.8,
            packets: (handled_pps * 6.0) as u64,
            packet_basis: "x".into(),
            us_per_packet: Some(ns / 1000.0),
            attributed_seconds: Some(4.8),
            attributed_us_per_packet: Some(ns / 1000.0),
        }),
        ..Default::default()
    };
    RunResult::XdpLoad(Box::new(XdpLoadReport {
        traffic: t,
        inject: "live".into(),
        runs: 30,
        batch: 64,
        relay_handled: Some((handled_pps * 6.0) as u64),
        relay_handled_pps: Some(handled_pps),
        relay_rx_dropped: Some(dropped),
        relay_tx_dropped: Some(0),
        generator_ns_per_frame: Some(80.0),
    }))
}

fn xdp_results(responder_pps: f64) -> Results {
    let mut res: Results = BTreeMap::new();
    for (s, pps, busy) in [
        ("coturn", 40_000.0, 1.0),
        ("xturn", 70_000.0, 1.0),
        ("xturn-xdp", 250_000.0, 0.2),
    ] {
        let mut t = traffic("stun", 0, pps, None);
        if let RunResult::Traffic(r) = &mut t {
            r.sent_pps = 260_000.0;
            r.client_if_drops = Some(1_000);
            r.relay_if_drops = Some(9_000);
            r.cpu = Some(crate::cpu::CpuReport {
                cpus: vec![1],
                busy,
                busy_seconds: busy * 6.0,
                packets: 1,
                packet_basis: "x".into(),
                us_per_packet: Some(1.0),
                attributed_seconds: None,
                attributed_us_per_packet: None,
            });
        }
        res.entry(s.into()).or_default().insert("stun".into(), t);
    }
    let x = res.entry(XDP.into()).or_default();
    x.insert("responder".into(), xdp_load(responder_pps, 400.0, 1000));
    x.insert("reflector".into(), xdp_load(4_000_000.0, 100.0, 0));
    let stats = |n: u64| {
        parse_result(&format!(
            r#"{{"programs":[{{"id":1,"counters":{{"tx_binding_ipv4":{n},"aborted":0}}}}]}}"#
        ))
        .unwrap()
        .unwrap()
    };
    x.insert("stats-before".into(), stats(10));
    x.insert("stats-after".into(), stats(13_000_010));
    let cost = XdpCostReport {
        mode: "xdp-cost".into(),
        frame_len: 70,
        cpus: vec![1],
        method: "m".into(),
        programs: [
            ("responder", 380.0),
            ("responder-nofp", 270.0),
            ("reflector", 90.0),
            ("pass", 88.0),
        ]
        .iter()
        .map(|(n, m)| crate::xdp_bench::ProgramCost {
            name: n.to_string(),
            action: "TX".into(),
            runs: 10,
            mean_ns: *m,
            ..Default::default()
        })
        .collect(),
    };
    x.insert("cost".into(), RunResult::XdpCost(cost));
    res
}

#[test]
fn xdp_column_and_section() {
    let a = Meta {
        command: "c".into(),
        date: "d".into(),
        notes: String::new(),
        commands: Vec::new(),
    };
    let (md, _) = render_markdown(
        &xdp_results(2_200_000.0),
        &BTreeMap::new(),
        &a,
        "l.svg",
        "m",
    );
    assert!(
        md.contains("| stun: Binding responses/s (flat out) ↑ | 40,000 | 70,000 | 250,000 | – | – | 1.75× | 3.57× | – | – | – | – |"),
        "{md}"
    );
    assert!(
        md.contains("| stun: requests sent/s (the generator's rate) ↑ | 260,000 |"),
        "{md}"
    );
    // The generator is the limit when the relay core is mostly idle.
    assert!(
        md.contains("unanswered: 1,000 requests dropped entering the relay veth, 9,000 answers dropped leaving it")
            && md.contains("the relay core was 20.000 % busy (– µs of relay CPU per answer). The generator's side, not the responder, is the limit here"),
        "{md}"
    );
    assert!(
        md.contains("The responder handled 2.20 Mpps on one core: 0.55× the bare reflector's 4.00 Mpps under the same conditions, within 2× of the reflector by this measure"),
        "{md}"
    );
    assert!(
        md.contains("400 ns with the responder and 100 ns with the reflector: 4.0×, not within 2× by this measure"),
        "{md}"
    );
    assert!(
        md.contains("31.4× xturn on sockets (70,000/s flat out), 55.0× coturn"),
        "{md}"
    );
    assert!(md.contains("tx_binding_ipv4 +13,000,000"), "{md}");
    assert!(md.contains("13,200,000 frames handled"), "{md}");
    assert!(
        md.contains("costs 290 ns more per request than the bare reflector's"),
        "{md}"
    );
    assert!(md.contains("accounts for 110 ns"), "{md}");
    assert!(md.contains("(responder 80.000 %)"), "{md}");
    // Below half the reflector's rate the verdict flips.
    let (md, _) = render_markdown(
        &xdp_results(1_900_000.0),
        &BTreeMap::new(),
        &a,
        "l.svg",
        "m",
    );
    assert!(
        md.contains(
            "0.47× the bare reflector's 4.00 Mpps under the same conditions, not within 2×"
        ),
        "{md}"
    );
}

#[test]
fn xdp_file_names() {
    assert_eq!(
        split_name("xturn-xdp-stun-20k.json"),
        Some(("xturn-xdp".into(), "stun-20k".into()))
    );
    assert_eq!(
        split_name("xdp-stats-before.json"),
        Some(("xdp".into(), "stats-before".into()))
    );
    assert!(parse_result(r#"{"programs":[]}"#).is_err());
}

fn stats_json(redirect: u64, no_hop: u64, received: u64, to_peer: u64, fill_empty: u64) -> String {
    format!(
        r#"{{"programs":[{{"id":7,"interfaces":[],"in_this_netns":true,"counters":{{"redirect_channel":{redirect},"redirect_peer":0,"pass_no_next_hop":{no_hop},"pass_stun_for_user_space":5}}}}],
           "servers":[{{"pid":1,"threads":[{{"thread":0,"forwarder":{{"received":{received},"to_peer":{to_peer},"to_client":0,"slow_path":1,"dropped_tx_full":2,"dropped_not_allowed":0}},
           "ports":[{{"ifindex":2,"queue":0,"mode":"copy","fill_frames":0,"tx_frames":0,"ring_indices":{{}},"xdp_statistics":{{"rx_dropped":{fill_empty},"rx_fill_ring_empty_descs":{fill_empty}}},"rings":{{"rx":{received}}}}},
                    {{"ifindex":3,"queue":0,"mode":"copy","fill_frames":0,"tx_frames":0,"ring_indices":{{}},"xdp_statistics":{{"rx_dropped":0,"rx_fill_ring_empty_descs":0}},"rings":{{"tx":{to_peer}}}}}]}}]}}]}}"#
    )
}

#[test]
fn afxdp_counters_from_stats_and_their_deltas() {
    let b = AfxdpCounters::from_stats(&stats_json(10, 1, 10, 8, 0)).unwrap();
    let a = AfxdpCounters::from_stats(&stats_json(1010, 9, 900, 897, 100)).unwrap();
    let d = a.since(&b);
    assert_eq!(d.steered(), 1000);
    assert_eq!(d.no_next_hop(), 8);
    assert_eq!(d.passed_data(), 8);
    assert_eq!(d.in_place(), 889);
    assert_eq!((d.slow_path(), d.forwarder_drops()), (0, 0));
    assert_eq!((d.kernel_drops(), d.fill_ring_empty()), (100, 100));
    assert_eq!(d.rings.rx, 890);
    assert_eq!(d.in_place_share(), Some(889.0 / 897.0));
    assert!(AfxdpCounters::from_stats(r#"{"programs":[]}"#).is_err());
    // The directory form: NAME.before.json / NAME.after.json, keyed by test.
    let dir = std::env::temp_dir().join(format!("xtb-afxdp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in [
        (
            "xturn-afxdp-relay-max.before.json",
            stats_json(10, 1, 10, 8, 0),
        ),
        (
            "xturn-afxdp-relay-max.after.json",
            stats_json(1010, 9, 900, 897, 100),
        ),
        ("afxdp-forwarder.before.json", stats_json(0, 0, 0, 0, 0)),
        ("afxdp-forwarder.after.json", stats_json(5, 0, 5, 5, 0)),
        (
            "xturn-afxdp-echo-20k.before.json",
            stats_json(0, 0, 0, 0, 0),
        ),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let m = load_afxdp_stats(&dir).unwrap();
    assert_eq!(m.keys().collect::<Vec<_>>(), vec!["forwarder", "relay-max"]);
    assert!(matches!(&m["relay-max"], RunResult::Afxdp(c) if *c == d));
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(load_afxdp_stats(Path::new("/nonexistent-xtb"))
        .unwrap()
        .is_empty());
    assert_eq!(
        split_name("xturn-afxdp-relay-50k.json"),
        Some(("xturn-afxdp".into(), "relay-50k".into()))
    );
    assert_eq!(
        split_name("afxdp-xsk-reflect.json"),
        Some(("afxdp".into(), "xsk-reflect".into()))
    );
}

fn relay_load(delivered_pps: f64, ns: f64, target: &str) -> RunResult {
    use crate::cpu::CpuReport;
    let t = TrafficReport {
        mode: "xdp-relay-load".into(),
        params: Params {
            size: 100,
            ..Default::default()
        },
        sent: 30_000_000,
        sent_pps: 5_000_000.0,
        received_pps: delivered_pps,
        loss: Some(0.9),
        cpu: Some(CpuReport {
            cpus: vec![1],
            busy: 0.9,
            busy_seconds: 5.4,
            packets: (delivered_pps * 6.0) as u64,
            packet_basis: "x".into(),
            us_per_packet: Some(ns / 1000.0),
            attributed_seconds: Some(5.4),
            attributed_us_per_packet: Some(ns / 1000.0),
        }),
        ..Default::default()
    };
    let delivered = (delivered_pps * 6.0) as u64;
    RunResult::XdpRelayLoad(Box::new(XdpRelayLoadReport {
        traffic: t,
        target: target.into(),
        inject: "live".into(),
        runs: 7,
        batch: 64,
        flows: 64,
        frame_len: 146,
        relay_handled: Some(6_000_000),
        relay_handled_pps: Some(1_000_000.0),
        relay_rx_dropped: Some(20_000_000),
        relay_tx_dropped: Some(0),
        deliver_iface: "pa".into(),
        delivered,
        delivered_pps,
        relay_process_cpu_s: Some(delivered as f64 * ns / 2e9),
        relay_napi_cpu_s: Some(delivered as f64 * ns / 2e9),
        ..Default::default()
    }))
}

fn afxdp_results(forwarder_pps: f64, forwarder_ns: f64) -> Results {
    let mut res: Results = BTreeMap::new();
    for (s, pps, ns) in [
        ("coturn", 100_000.0, 9_000.0),
        ("xturn", 150_000.0, 6_000.0),
    ] {
        let mut t = traffic("relay", 0, pps, None);
        if let RunResult::Traffic(r) = &mut t {
            r.cpu = Some(crate::cpu::CpuReport {
                cpus: vec![1],
                busy: 1.0,
                busy_seconds: 6.0,
                packets: 1,
                packet_basis: "x".into(),
                us_per_packet: Some(ns / 1000.0),
                attributed_seconds: None,
                attributed_us_per_packet: Some(ns / 1000.0),
            });
        }
        res.entry(s.into())
            .or_default()
            .insert("relay-max".into(), t);
    }
    let mut t = traffic("relay", 0, 270_000.0, None);
    if let RunResult::Traffic(r) = &mut t {
        r.sent = 1_000_000;
        r.received = 900_000;
        r.relay_loss = Some(0.08);
        r.client_if_drops = Some(30_000);
        r.relay_if_drops = Some(20_000);
    }
    res.entry(XTURN_AFXDP.into())
        .or_default()
        .insert("relay-max".into(), t);
    let c = AfxdpCounters::from_stats(&stats_json(1010, 9, 900, 897, 100))
        .unwrap()
        .since(&AfxdpCounters::from_stats(&stats_json(10, 1, 10, 8, 0)).unwrap());
    let m = res.entry(AFXDP_COUNTERS.into()).or_default();
    m.insert("relay-max".into(), RunResult::Afxdp(c.clone()));
    m.insert("forwarder-1".into(), RunResult::Afxdp(c.clone()));
    m.insert("forwarder-2".into(), RunResult::Afxdp(c));
    let x = res.entry(AFXDP.into()).or_default();
    for (k, d) in [(1, 0.0), (2, -50_000.0), (3, 50_000.0)] {
        x.insert(
            format!("forwarder-{k}"),
            relay_load(forwarder_pps + d, forwarder_ns, "relay"),
        );
    }
    x.insert(
        "reflector-1".into(),
        relay_load(480_000.0, 2_000.0, "reflector"),
    );
    x.insert(
        "reflector-2".into(),
        relay_load(520_000.0, 2_000.0, "reflector"),
    );
    // Not a run of either.
    x.insert("forwarder-x".into(), relay_load(1.0, 1.0, "relay"));
    res
}

#[test]
fn defaults_section_sets_the_untuned_runs_beside_the_lab_ones() {
    let mut res = afxdp_results(450_000.0, 2_200.0);
    assert!(
        !render_markdown(&res, &BTreeMap::new(), &Meta::default(), "l.svg", "m")
            .0
            .contains("price of defaults")
    );
    let mut t = traffic("relay", 0, 135_000.0, None);
    if let RunResult::Traffic(r) = &mut t {
        r.received = 1_000;
    }
    res.entry(XTURN_AFXDP_DEFAULTS.into())
        .or_default()
        .insert("relay-max".into(), t);
    // 990 of 1,000 by the forwarder; the lab's counters: 897 of 900 000 received.
    let c = AfxdpCounters::from_stats(&stats_json(1000, 0, 1000, 990, 0)).unwrap();
    res.entry(AFXDP_COUNTERS.into())
        .or_default()
        .insert("defaults-relay-max".into(), RunResult::Afxdp(c));
    let (md, _) = render_markdown(&res, &BTreeMap::new(), &Meta::default(), "l.svg", "m");
    let sec = &md[md
        .find("## The price of defaults")
        .unwrap_or_else(|| panic!("{md}"))..];
    assert!(
        sec.contains("| relay-max: received at peer pps ↑ | 270,000 | 135,000 | 0.50× |"),
        "{sec}"
    );
    assert!(
        sec.contains(
            "| relay-max: AF_XDP share of the datagrams received ↑ | 0.099 % | 99.000 % |"
        ),
        "{sec}"
    );
    assert_eq!(
        split_name("xturn-afxdp-defaults-relay-20k.json"),
        Some((XTURN_AFXDP_DEFAULTS.into(), "relay-20k".into()))
    );
}

#[test]
fn afxdp_section_paths_ratios_and_verdicts() {
    let (md, _) = render_markdown(
        &afxdp_results(450_000.0, 2_200.0),
        &BTreeMap::new(),
        &Meta::default(),
        "l.svg",
        "m",
    );
    assert!(md.contains("## xturn-afxdp: the AF_XDP forwarder"), "{md}");
    assert!(
        md.contains("| relay-max | 1,000,000 | 1,000 | 8 | 0 | 100 | 889 | 0 | 0 | 99.108 % |"),
        "{md}"
    );
    assert!(
        md.contains("relay-max: 80,000 of 1,000,000 datagrams sent were lost at or before the relay (8.000 %): 30,000 in the veth ring into the relay"),
        "{md}"
    );
    assert!(
        md.contains("the forwarder delivered a median 0.45 Mpps on one relay core (0.45 Mpps, 0.40 Mpps, 0.50 Mpps per run), 0.90× the bare reflector's median 0.50 Mpps (0.48 Mpps, 0.52 Mpps per run) under the same load; run against run, the ratio lies between 0.77× and 1.04×. Target: at least 0.80× — met (by the medians)."),
        "{md}"
    );
    assert!(
        md.contains("a median 2200 ns per delivered frame with the forwarder and 2000 ns with the reflector, so one core's worth of the forwarder relays 0.91×"),
        "{md}"
    );
    assert!(
        md.contains("took a median 1100 ns and 1000 ns per delivered frame"),
        "{md}"
    );
    assert!(
        md.contains("over the forwarder's loads (summed): the XDP program steered 2,000 frames"),
        "{md}"
    );
    assert!(
        md.contains("| **bare AF_XDP reflector (xsk-reflect), median** | 5,000,000 | 1,000,000 | 20,000,000 | 500,000 |"),
        "{md}"
    );
    assert!(
        md.contains("- vs coturn on sockets (relay-max of this run: 100,000/s relayed flat out on the same core, 100.000 % busy, 9,000 ns of relay threads' CPU per relayed packet): 4.50× by rate, 4.09× by CPU per packet. Target: at least 5× coturn per core — **not met**."),
        "{md}"
    );
    assert!(md.contains("- vs xturn on sockets"), "{md}");
    assert!(
        md.contains("| relay-max: of which dropped at the AF_XDP sockets or by the forwarder ↓ | – | – | – | 100 | – | – | – | – |"),
        "{md}"
    );
    assert!(
        md.contains("| AF_XDP forwarder (xturn-afxdp), run 1 | 5,000,000 | 1,000,000 | 20,000,000 | 450,000 | 90.000 % | 0 | 90.000 % | 2,200 | 2,200 | 1,100 | 1,100 |"),
        "{md}"
    );
    // Below 80 % of the reflector, and 5x coturn by both measures.
    let (md, _) = render_markdown(
        &afxdp_results(390_000.0, 1_500.0),
        &BTreeMap::new(),
        &Meta::default(),
        "l.svg",
        "m",
    );
    assert!(
        md.contains("0.78× the bare reflector's median 0.50 Mpps (0.48 Mpps, 0.52 Mpps per run) under the same load; run against run, the ratio lies between 0.65× and 0.92×. Target: at least 0.80× — **not met** (by the medians)."),
        "{md}"
    );
    assert!(md.contains("3.90× by rate, 6.00× by CPU per packet. Target: at least 5× coturn per core — **not met**."), "{md}");
    // The commands block, from commands.txt (duplicates of a re-run once).
    let meta = Meta {
        commands: parse_commands(
            "xturn-afxdp server\tip netns exec r xturn --xdp a,b\nafxdp-forwarder-1\txturn-bench xdp-relay-load --x\nafxdp-forwarder-1\txturn-bench xdp-relay-load --x\nother\tno\nbad line\n",
        ),
        ..Meta::default()
    };
    assert_eq!(meta.commands.len(), 4);
    let (md, _) = render_markdown(
        &afxdp_results(600_000.0, 1_500.0),
        &BTreeMap::new(),
        &meta,
        "l.svg",
        "m",
    );
    assert!(
        md.contains("```sh\n# xturn-afxdp server\nip netns exec r xturn --xdp a,b\n# afxdp-forwarder-1\nxturn-bench xdp-relay-load --x\n```"),
        "{md}"
    );
    let (md, _) = render_markdown(
        &afxdp_results(600_000.0, 1_500.0),
        &BTreeMap::new(),
        &Meta::default(),
        "l.svg",
        "m",
    );
    assert!(
        md.contains(
            "6.00× by rate, 6.00× by CPU per packet. Target: at least 5× coturn per core — met."
        ),
        "{md}"
    );
}

/// A closed-loop run: `pps` relayed in both directions (`back` of them to the client),
/// `ns` of relay threads' CPU per datagram, the relay core `busy`.
fn loop_load(pps: f64, ns: f64, back: f64, busy: f64, target: &str) -> RunResult {
    let mut r = relay_load(pps, ns, target);
    if let RunResult::XdpRelayLoad(l) = &mut r {
        l.traffic.elapsed_s = 6.0;
        l.traffic.sent_pps = 20_000.0;
        if let Some(c) = &mut l.traffic.cpu {
            c.busy = busy;
            c.attributed_seconds = Some(busy * 6.0);
        }
        l.loop_budget = Some(200_000_000);
        l.echoed = Some((back * 6.0) as u64);
        l.delivered_back = (target == "relay").then_some((back * 6.0) as u64);
    }
    r
}

#[test]
fn closed_loop_section_judges_every_target_by_rate_and_by_cpu() {
    let mut res: Results = BTreeMap::new();
    assert_eq!(closed_loop_section(&res, &BTreeMap::new()), "");
    let x = res.entry(AFXDP.into()).or_default();
    for k in 1..=3 {
        let d = (k as f64 - 2.0) * 10_000.0;
        // In-kernel: 2.6 M/s at 370 ns; XDP_TX reflector 7.6 M/s at 100 ns, 74 % busy.
        x.insert(
            format!("loop-inkernel-{k}"),
            loop_load(2_600_000.0 + d, 370.0, 1_300_000.0, 0.99, "relay"),
        );
        x.insert(
            format!("loop-xdptx-{k}"),
            loop_load(7_600_000.0 + d, 100.0, 0.0, 0.74, "reflector"),
        );
        // One interface for both legs: 4 M/s at 200 ns; one counter holds both directions.
        let mut one = loop_load(4_000_000.0 + d, 200.0, 0.0, 0.99, "relay");
        if let RunResult::XdpRelayLoad(l) = &mut one {
            l.delivered_back = None;
        }
        x.insert(format!("loop-inkernel1-{k}"), one);
        x.insert(
            format!("loop-forwarder-{k}"),
            loop_load(600_000.0 + d, 1_600.0, 300_000.0, 0.99, "relay"),
        );
        x.insert(
            format!("loop-xsk-{k}"),
            loop_load(700_000.0 + d, 1_400.0, 0.0, 0.99, "reflector"),
        );
        x.insert(
            format!("loop-sockets-{k}"),
            loop_load(160_000.0 + d / 10.0, 6_000.0, 80_000.0, 0.97, "relay"),
        );
        x.insert(
            format!("loop-upstream-{k}"),
            loop_load(130_000.0 + d / 10.0, 7_400.0, 65_000.0, 0.97, "relay"),
        );
        x.insert(
            format!("loop-coturn-{k}"),
            loop_load(110_000.0 + d / 10.0, 9_000.0, 55_000.0, 0.97, "relay"),
        );
    }
    let mut disturbed = BTreeMap::new();
    disturbed.insert("afxdp-loop-coturn-2".to_string(), 40);
    let md = closed_loop_section(&res, &disturbed);
    assert!(
        md.contains("## Closed loop: every relay at saturation"),
        "{md}"
    );
    // Runs, medians, directions.
    assert!(md.contains("| in-kernel relay (xturn-inkernel), run 2 | 2,600,000 | 1,300,000 | 1,300,000 | 20,000 |"), "{md}");
    assert!(
        md.contains("| **coturn (Debian's package), median** | 110,000 | 55,000 | 55,000 |"),
        "{md}"
    );
    assert!(
        md.contains("| coturn (Debian's package), run 2 ⚠ |"),
        "{md}"
    );
    // A reflector has no peer-to-client direction.
    assert!(
        md.contains("| bare XDP_TX reflector (xdp-reflect), run 1 | 7,590,000 | – | – |"),
        "{md}"
    );
    // Only the XDP_TX reflector had time left, and is named so.
    assert!(md.contains("Not saturated (relay core median busy below 90.000 %): bare XDP_TX reflector (xdp-reflect) (74.000 %)."), "{md}");
    // Per core against the coturns: 2.6 M / 110 k = 23.64×, 9000 / 370 = 24.32×.
    assert!(
        md.contains("| in-kernel relay (xturn-inkernel) | 23.64× | 24.32× | 20.00× | 20.00× |"),
        "{md}"
    );
    assert!(
        md.contains("| xturn on sockets | 1.45× | 1.50× | 1.23× | 1.23× |"),
        "{md}"
    );
    // The targets: 2.6/7.6 = 0.34× by rate, 100/370 = 0.27× by CPU: not met; the coturn
    // targets met both ways; the forwarder 0.86× / 0.88× of its reflector (met), 5.45× /
    // 5.62× coturn (met).
    assert!(md.contains("- In-kernel relay (peer behind the relay's other interface: a redirect to it) vs the bare XDP_TX reflector (target at least 0.50×): by rate 0.34× — **not met**; by CPU per datagram 0.27× — **not met**."), "{md}");
    // 4.0/7.6 = 0.53× by rate, 100/200 = 0.50× by CPU: met both ways.
    assert!(md.contains("- In-kernel relay (one interface for both legs: XDP_TX, as the reflector does) vs the bare XDP_TX reflector (target at least 0.50×): by rate 0.53× — met; by CPU per datagram 0.50× — met."), "{md}");
    // Its runs say both directions only together.
    assert!(md.contains("| in-kernel relay, one interface for both legs (xturn-inkernel, XDP_TX both ways), run 2 | 4,000,000 | – | – | 20,000 |"), "{md}");
    // 4.0 M / 110 k = 36.36×, 9000 / 200 = 45.00×.
    assert!(md.contains("| in-kernel relay, one interface for both legs (xturn-inkernel, XDP_TX both ways) | 36.36× | 45.00× |"), "{md}");
    assert!(md.contains("- In-kernel relay (peer behind the relay's other interface: a redirect to it) vs coturn (Debian) per core (target at least 20×): by rate 23.64× — met; by CPU per datagram 24.32× — met."), "{md}");
    assert!(md.contains("- In-kernel relay (peer behind the relay's other interface: a redirect to it) vs coturn upstream per core (target at least 15×): by rate 20.00× — met; by CPU per datagram 20.00× — met."), "{md}");
    // And with one interface: 4.0 M / 110 k = 36.36×, 9000 / 200 = 45.00×; 4.0 M / 130 k
    // = 30.77×, 7400 / 200 = 37.00×.
    assert!(md.contains("- In-kernel relay (one interface for both legs: XDP_TX, as the reflector does) vs coturn (Debian) per core (target at least 20×): by rate 36.36× — met; by CPU per datagram 45.00× — met."), "{md}");
    assert!(md.contains("- In-kernel relay (one interface for both legs: XDP_TX, as the reflector does) vs coturn upstream per core (target at least 15×): by rate 30.77× — met; by CPU per datagram 37.00× — met."), "{md}");
    assert!(md.contains("- AF_XDP forwarder vs the bare AF_XDP reflector (issue 3, target at least 0.80×): by rate 0.86× — met; by CPU per datagram 0.88× — met."), "{md}");
    assert!(md.contains("- AF_XDP forwarder vs coturn (Debian) per core (issue 3, target at least 5×): by rate 5.45× — met; by CPU per datagram 5.62× — met."), "{md}");
    // And it is part of the document.
    let doc = render_markdown(&res, &BTreeMap::new(), &Meta::default(), "l.svg", "m").0;
    assert!(doc.contains("## Closed loop: every relay at saturation"));
}

#[test]
fn scale_section_judges_each_mode_in_each_table() {
    let mut res: Results = BTreeMap::new();
    assert_eq!(scale_section(&res, &BTreeMap::new()), "");
    for (group, paced) in [(SCALE_RATE, true), (SCALE_LOOP, false)] {
        let g = res.entry(group.into()).or_default();
        for (mode, ns16, ns10k) in [
            ("sockets", 6_000.0, 8_000.0),
            ("afxdp", 1_600.0, 2_600.0),
            ("inkernel", 370.0, 500.0),
        ] {
            for (n, ns) in [(16, ns16), (1000, ns16), (10000, ns10k)] {
                let mut r = if paced {
                    relay_load(100_000.0, ns, "relay")
                } else {
                    loop_load(1_000_000.0, ns, 500_000.0, 0.99, "relay")
                };
                if let RunResult::XdpRelayLoad(l) = &mut r {
                    l.traffic.params.rate = if paced { 100_000 } else { 20_000 };
                }
                g.insert(format!("{mode}-{n}"), r);
            }
        }
    }
    let mut disturbed = BTreeMap::new();
    disturbed.insert("scaleloop-afxdp-1000".to_string(), 40);
    let md = scale_section(&res, &disturbed);
    assert!(md.contains("### At a fixed offered rate"), "{md}");
    assert!(md.contains("### In the closed loop"), "{md}");
    assert!(!md.contains("### Flat out"), "{md}");
    // 8000/6000 = 1.33× (met), 2600/1600 = 1.62× (not met), 500/370 = 1.35× (met), in
    // both tables.
    let verdicts = "xturn on sockets: 1.33× at 10,000 allocations vs 16 — met; xturn-afxdp (AF_XDP forwarder): 1.62× at 10,000 allocations vs 16 — **not met**; xturn-inkernel (in-kernel relay): 1.35× at 10,000 allocations vs 16 — met.";
    assert_eq!(md.matches(verdicts).count(), 2, "{md}");
    // The paced table shows the loss; the loop's does not (more delivered than sent).
    assert!(
        md.contains("| xturn on sockets | 16 | 100,000 | 5,000,000 | 100,000 | 90.000 % |"),
        "{md}"
    );
    assert!(
        md.contains("| xturn on sockets | 16 | 20,000 | 20,000 | 1,000,000 | – |"),
        "{md}"
    );
    assert!(
        md.contains("| xturn-afxdp (AF_XDP forwarder) ⚠ | 1,000 | 20,000 |"),
        "{md}"
    );
}
