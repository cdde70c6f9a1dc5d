//! `ethpaxos bench` end to end on the in-process transport, on a small grid: one row per
//! point in results.csv and results.json, each with acknowledged values and latencies in
//! order, and the three plots as PNG files.

use std::process::Command;

#[test]
fn a_small_grid_writes_csv_json_costs_and_plots() {
    let out = std::env::temp_dir().join(format!("ethpaxos-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new(env!("CARGO_BIN_EXE_ethpaxos"))
        .args([
            "bench",
            "--transport",
            "inproc",
            "--clients",
            "1,4",
            "--policies",
            "none,sync",
            "--warmup",
            "300ms",
            "--duration",
            "700ms",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 5, "a header and 4 points:\n{csv}");
    assert!(rows[0].starts_with("transport,policy,clients"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let points = json.as_array().unwrap();
    assert_eq!(points.len(), 4);
    let modes: Vec<(&str, u64)> = points
        .iter()
        .map(|p| {
            (
                p["policy"].as_str().unwrap(),
                p["clients"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(modes, [("none", 1), ("none", 4), ("sync", 1), ("sync", 4)]);
    for p in points {
        assert!(p["values"].as_u64().unwrap() > 0, "{p}");
        let lat = |k: &str| p[k].as_f64().unwrap();
        assert!(
            0.0 < lat("latency_p50_us")
                && lat("latency_p50_us") <= lat("latency_p99_us")
                && lat("latency_p99_us") <= lat("latency_p999_us"),
            "{p}"
        );
        for role in ["acceptor", "proposer", "learner"] {
            let cpu = p["cpu_percent"][role].as_f64().unwrap();
            assert!(cpu.is_finite() && cpu >= 0.0, "{p}");
        }
    }
    // CPU time is counted in clock ticks (10 ms): a light point may show none, but the run
    // as a whole must have measured some.
    assert!(
        points
            .iter()
            .any(|p| p["cpu_percent"]["acceptor"].as_f64().unwrap() > 0.0),
        "no CPU measured at any point: {json}"
    );
    // What a value costs: a value is proposed and voted on in messages between nodes, and
    // its node threads use CPU.
    for p in points {
        let per = |k: &str| p[k].as_f64().unwrap();
        assert!(
            per("frames_per_value") > 0.0 && per("frames_per_value") < 100.0,
            "{p}"
        );
        assert!(per("wakeups_per_value").is_finite(), "{p}");
    }
    assert!(
        points
            .iter()
            .any(|p| p["cpu_us_per_value"].as_f64().unwrap() > 0.0),
        "no CPU per value at any point: {json}"
    );
    assert!(rows[0].ends_with(
        "frames_per_value,cpu_us_per_value,wakeups_per_value,syscalls_per_value,max_frame"
    ));
    for png in ethpaxos::bench::plot::FIGURES.map(|f| f.file) {
        let bytes = std::fs::read(out.join(png)).unwrap();
        assert!(
            bytes.len() > 10_000 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{png} is not a drawn PNG ({} bytes)",
            bytes.len()
        );
    }
    assert!(stdout.contains("| inproc | sync disk | 4 |"), "{stdout}");
    let _ = std::fs::remove_dir_all(&out);
}
