//! `memsleuth retained` against real processes on every interpreter: a
//! module-level dict of bytes payloads of known size is the top entry with
//! its retained size within 10% of the truth; an object shared by two
//! holders is retained by neither (it is an entry of its own); the text
//! form names the path; `why` gives its holders' retained sizes; the JSON
//! has what docs/retained.schema.json requires; the target is left as it
//! was. Read from memory (the default), no code of ours runs in the
//! target (its audit hook sees nothing, 3.8+).

mod common;

use common::{Interpreter, for_each_interpreter, memsleuth, run, spawn_target};
use serde_json::Value;

fn retained_json(interp: &Interpreter, pid: u32, limit: &str, extra: &[&str]) -> Value {
    let r = run(memsleuth()
        .args(["retained", &pid.to_string(), "--json", "--limit", limit])
        .args(extra));
    assert_eq!(
        r.code, 0,
        "[{interp}] retained failed: {}\n{}",
        r.stderr, r.stdout
    );
    let v: Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("[{interp}] retained: not JSON ({e}): {}", r.stdout));
    assert_eq!(v["schema"], 1);
    for key in [
        "attach_s",
        "graph_s",
        "analysis_s",
        "labels_s",
        "total_s",
        "gil_s",
    ] {
        let x = v[key].as_f64().unwrap_or(-1.0);
        assert!((0.0..600.0).contains(&x), "[{interp}] {key} = {}", v[key]);
    }
    v
}

/// Every field the schema in docs/ requires is there (top level, heap, entries).
fn check_schema(interp: &Interpreter, v: &Value) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/retained.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let required = |s: &Value| -> Vec<String> {
        s["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect()
    };
    let p = &schema["properties"];
    for (doc, s) in [(v, &schema), (&v["heap"], &p["heap"])].into_iter().chain(
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e, &p["entries"]["items"])),
    ) {
        for k in required(s) {
            assert!(doc.get(&k).is_some(), "[{interp}] `{k}` missing from {doc}");
        }
    }
}

fn entry_for(v: &Value, id: u64) -> Option<&Value> {
    v["entries"]
        .as_array()?
        .iter()
        .find(|e| e["id"].as_u64() == Some(id))
}

#[test]
fn module_dict_of_payloads_is_the_top_entry_and_shared_objects_belong_to_neither() {
    for_each_interpreter(|interp| {
        let t = spawn_target(interp, "retained_target", &["--main", "sleep"])
            .unwrap_or_else(|| panic!("[{interp}] retained_target unsupported"));
        let before = t.report_state();
        let blobs: u64 = t.info_parse("blobs_id");
        let blobs_bytes: u64 = t.info_parse("blobs_bytes");
        let left: u64 = t.info_parse("left_id");
        let right: u64 = t.info_parse("right_id");
        let shared: u64 = t.info_parse("shared_id");
        let shared_bytes: u64 = t.info_parse("shared_bytes");
        // From memory (the default: no code runs in the target), then with
        // the agent: the same checks.
        for (extra, source) in [(&[][..], "memory"), (&["--inject"][..], "agent")] {
            let v = retained_json(interp, t.pid, "30", extra);
            assert_eq!(v["source"], source, "[{interp}] {extra:?}");
            if source == "memory" {
                assert_eq!(v["gil_s"], 0.0, "[{interp}] code ran in the target");
                assert!(
                    v["memory"]["paused_s"].as_f64().is_some(),
                    "[{interp}] {}",
                    v["memory"]
                );
            }
            check_schema(interp, &v);
            let entries = v["entries"].as_array().expect("entries");
            let top = &entries[0];
            assert_eq!(
                top["id"].as_u64(),
                Some(blobs),
                "[{interp}] the payload dict is not the top entry: {}",
                serde_json::to_string_pretty(&entries[..entries.len().min(3)]).unwrap()
            );
            let got = top["retained_bytes"].as_u64().unwrap() as f64;
            let ratio = got / blobs_bytes as f64;
            assert!(
                (0.9..=1.1).contains(&ratio),
                "[{interp}] retained {got} vs true {blobs_bytes} (ratio {ratio:.3})"
            );
            assert!(top["count"].as_u64().unwrap() >= 201, "[{interp}] {top}");
            let path = top["path"].as_str().unwrap();
            assert!(
                path.starts_with("module payload_store") && path.contains("['_blobs']"),
                "[{interp}] path {path:?}"
            );
            assert_eq!(
                top["top_types"][0]["type"],
                if interp.at_least(3, 0) {
                    "bytes"
                } else {
                    "str"
                }
            );
            let share = top["share"].as_f64().unwrap();
            assert!(share > 0.0 && share <= 1.0, "[{interp}] share {share}");

            // The shared payload: in neither holder, an entry of its own.
            for (name, id) in [("left", left), ("right", right)] {
                if let Some(e) = entry_for(&v, id) {
                    let b = e["retained_bytes"].as_u64().unwrap();
                    assert!(
                        b < shared_bytes / 2,
                        "[{interp}] {name} holder retains {b} bytes: the shared {shared_bytes} counted in it"
                    );
                }
            }
            let s = entry_for(&v, shared).unwrap_or_else(|| {
                panic!(
                    "[{interp}] the shared payload is not an entry: {}",
                    serde_json::to_string_pretty(entries).unwrap()
                )
            });
            let b = s["retained_bytes"].as_u64().unwrap();
            assert!(
                b >= shared_bytes && b < shared_bytes + shared_bytes / 10,
                "[{interp}] shared retains {b}, its size is {shared_bytes}"
            );
            assert!(
                v["heap"]["total_bytes"].as_u64().unwrap() > blobs_bytes + shared_bytes,
                "[{interp}] heap total {}",
                v["heap"]["total_bytes"]
            );
        }

        // The agent's session left no garbage holding the target's frames
        // (a cycle through its own frame once kept them, and from memory
        // their stale stack slots then looked like references).
        let probe = "import gc\n\
gc.set_debug(gc.DEBUG_SAVEALL)\n\
gc.collect()\n\
n = len([o for o in gc.garbage if type(o) is list and [x for x in o if type(x).__name__ == 'frame']])\n\
del gc.garbage[:]\n\
gc.set_debug(0)\n\
print('frame lists %d' % n)";
        let r = run(memsleuth().args(["retained", &t.pid.to_string(), "--inject", "--limit", "1"]));
        assert_eq!(r.code, 0, "[{interp}] {}", r.stderr);
        let r = run(memsleuth().args(["exec", &t.pid.to_string(), probe]));
        assert_eq!(r.code, 0, "[{interp}] probe: {}", r.stderr);
        assert!(
            r.stdout.contains("frame lists 0"),
            "[{interp}] garbage holding frames after retained --inject: {}",
            r.stdout
        );

        // The text form: the path under the entry.
        let r = run(memsleuth().args(["retained", &t.pid.to_string(), "--limit", "3"]));
        assert_eq!(r.code, 0, "[{interp}] {}", r.stderr);
        assert!(
            r.stdout
                .contains("module payload_store → payload_store.__dict__['_blobs']"),
            "[{interp}] text:\n{}",
            r.stdout
        );
        // `why` names the holder of the boxes with its retained size.
        let boxes: u64 = t.info_parse("boxes_id");
        let boxes_bytes: u64 = t.info_parse("boxes_bytes");
        let pid = t.pid.to_string();
        let why = ["why", &pid, "--type", "PayloadBox", "--samples", "10"];
        let r = run(memsleuth().args(why).arg("--json"));
        assert_eq!(r.code, 0, "[{interp}] why: {}", r.stderr);
        let w: Value = serde_json::from_str(&r.stdout).unwrap();
        let h = &w["holders"][0];
        assert_eq!(h["group"], 0, "[{interp}] {}", w["holders"]);
        assert_eq!(h["id"].as_u64(), Some(boxes), "[{interp}] holder {h}");
        let ratio = h["retained_bytes"].as_u64().unwrap() as f64 / boxes_bytes as f64;
        assert!(
            (0.9..=1.1).contains(&ratio),
            "[{interp}] why's holder retains {h}, true {boxes_bytes}"
        );
        let r = run(memsleuth().args(why));
        assert!(
            r.stdout.contains("held by payload_store._boxes")
                && r.stdout.contains("would be freed with the list at"),
            "[{interp}] why text:\n{}",
            r.stdout
        );
        // (--wait-detach: the agent's thread has ended when it returns.)
        let r = run(memsleuth()
            .args(why)
            .args(["--no-retained", "--json", "--wait-detach"]));
        let w: Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(w["holders"], serde_json::json!([]), "[{interp}]");
        let after = t.report_state();
        for key in ["modules", "threads", "fds", "main_names"] {
            assert_eq!(before[key], after[key], "[{interp}] {key} changed");
        }
        assert!(t.is_alive(), "[{interp}] the target died");

        // A core of it, read after the process is gone: the same top entry.
        let core = common::gcore(t.pid, t.tmpdir());
        t.kill_and_reap();
        let path = core.to_string_lossy().to_string();
        let r = run(memsleuth().args(["retained", "--core", &path, "--json", "--limit", "5"]));
        assert_eq!(r.code, 0, "[{interp}] retained --core: {}", r.stderr);
        let v: Value = serde_json::from_str(&r.stdout).unwrap();
        check_schema(interp, &v);
        assert_eq!(v["source"], "memory");
        assert_eq!(v["memory"]["core"], path.as_str());
        assert_eq!(v["pid"].as_u64(), Some(u64::from(t.pid)));
        let top = &v["entries"][0];
        assert_eq!(top["id"].as_u64(), Some(blobs), "[{interp}] core top {top}");
        let ratio = top["retained_bytes"].as_u64().unwrap() as f64 / blobs_bytes as f64;
        assert!(
            (0.9..=1.1).contains(&ratio),
            "[{interp}] core ratio {ratio:.3}"
        );
        std::fs::remove_file(&core).ok();
    });
}

#[test]
fn read_from_memory_runs_no_code_in_the_target() {
    for_each_interpreter(|interp| {
        if !interp.at_least(3, 8) {
            return;
        }
        let Some(t) = spawn_target(interp, "heap_population", &[]) else {
            return;
        };
        t.fifo_report();
        let r = run(memsleuth().args(["retained", &t.pid.to_string(), "--read-only", "--json"]));
        assert_eq!(r.code, 0, "[{interp}] {}", r.stderr);
        let v: Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(v["source"], "memory", "[{interp}]");
        assert!(v["heap"]["objects"].as_u64().unwrap() > 1000, "[{interp}]");
        assert_eq!(
            t.fifo_report()["audit"],
            serde_json::json!([]),
            "[{interp}] audit events during the read from memory"
        );
        assert!(t.is_alive(), "[{interp}] the target died");
    });
}
