//! Tests of the GPU inventories and readings: static lists, NVML answers, the fake, and
//! (ignored unless asked for) a real GPU.

use super::*;

#[test]
fn fake_count_gives_indexed_healthy_gpus() {
    let gpus = StaticGpus::fake(3).gpus();
    assert_eq!(
        gpus.iter().map(|g| g.index).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert!(gpus.iter().all(|g| g.healthy && g.numa == Some(0)));
    assert_ne!(gpus[0].uuid, gpus[1].uuid);
}

#[test]
fn parses_yaml_list_sorted_with_defaults() {
    let list = StaticGpus::parse(
        "- {index: 1, uuid: GPU-b, name: A100, memoryBytes: 80, numa: 1}\n- {index: 0, healthy: false}\n",
    )
    .unwrap();
    assert_eq!(list.0[0].index, 0);
    assert!(!list.0[0].healthy);
    assert_eq!(list.0[1].name, "A100");
    assert_eq!(list.0[1].numa, Some(1));
    assert!(list.0[1].healthy);
}

#[test]
fn parses_json_wrapped_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gpus.json");
    std::fs::write(&path, r#"{"gpus": [{"index": 0, "uuid": "GPU-x"}]}"#).unwrap();
    let list = StaticGpus::from_source(&StaticGpuSource::File(path)).unwrap();
    assert_eq!(list.0.len(), 1);
    assert_eq!(list.0[0].uuid, "GPU-x");
}

#[test]
fn bad_file_names_the_path() {
    let err = StaticGpus::from_file(Path::new("/nonexistent/gpus.yaml")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/gpus.yaml"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.yaml");
    std::fs::write(&path, "index: [").unwrap();
    assert!(matches!(
        StaticGpus::from_file(&path),
        Err(GpuError::Parse { .. })
    ));
}

#[test]
fn nvml_without_driver_reports_no_gpus() {
    // The test machines have no NVIDIA driver; on one that has, this still must not panic.
    let inv = NvmlInventory::open(Path::new("/sys"));
    let _ = inv.gpus();
    let _ = inv.readings();
}

#[test]
fn nvml_readings_from_answers() {
    let gib = 1u64 << 30;
    /// What: utilisation, (memory used, total), temperature, power in mW; the reading.
    type Case<'a> = (
        &'a str,
        Option<u32>,
        Option<(u64, u64)>,
        Option<u32>,
        Option<u32>,
        &'a str,
    );
    let cases: &[Case] = &[
        (
            "all known",
            Some(37),
            Some((2 * gib, 16 * gib)),
            Some(61),
            Some(215_500),
            "Some(37% 2147483648/17179869184 Some(61) Some(215.5))",
        ),
        (
            "no sensors",
            Some(0),
            Some((0, 16 * gib)),
            None,
            None,
            "Some(0% 0/17179869184 None None)",
        ),
        (
            "utilisation only",
            Some(100),
            None,
            None,
            None,
            "Some(100% 0/0 None None)",
        ),
        (
            "memory only",
            None,
            Some((5, 10)),
            None,
            None,
            "Some(0% 5/10 None None)",
        ),
        (
            "over 100 is capped",
            Some(250),
            None,
            None,
            None,
            "Some(100% 0/0 None None)",
        ),
        ("nothing readable", None, None, Some(50), Some(1), "None"),
    ];
    for (what, util, memory, temperature, power, want) in cases {
        let got = nvml_reading(3, *util, *memory, *temperature, *power).map(|r| {
            assert_eq!(r.index, 3);
            format!(
                "{}% {}/{} {:?} {:?}",
                r.utilization_percent,
                r.memory_used_bytes,
                r.memory_total_bytes,
                r.temperature_celsius,
                r.power_watts
            )
        });
        let got = match got {
            Some(text) => format!("Some({text})"),
            None => "None".to_string(),
        };
        assert_eq!(got, *want, "{what}");
    }
}

#[test]
fn static_lists_have_no_readings() {
    assert!(StaticGpus::fake(4).readings().is_empty());
}

#[test]
fn fake_gpus_report_what_the_test_sets() {
    let fake = FakeGpus::new(2);
    assert_eq!(fake.gpus().len(), 2);
    let shared = fake.clone();
    shared.set(1, 93, 7 << 30);
    shared.set(9, 50, 1);
    let readings = fake.readings();
    assert_eq!(
        readings
            .iter()
            .map(|r| (r.index, r.utilization_percent, r.memory_used_bytes))
            .collect::<Vec<_>>(),
        vec![(0, 0, 1 << 30), (1, 93, 7 << 30)]
    );
    assert!(readings.iter().all(|r| r.memory_total_bytes == 16 << 30));
    fake.set_readings(Vec::new());
    assert!(shared.readings().is_empty());
}

/// Real readings from a real GPU. Run by hand on a machine with an NVIDIA GPU and its
/// driver: `KOHAKURIVER_GPU_TESTS=1 cargo test -p kohakuriver-node-agent --lib
/// real_gpu_readings -- --ignored`. Fails, saying why, when there is no GPU to read.
#[test]
#[ignore = "needs an NVIDIA GPU and driver; run with KOHAKURIVER_GPU_TESTS=1 and --ignored"]
fn real_gpu_readings() {
    assert_eq!(
        std::env::var("KOHAKURIVER_GPU_TESTS").as_deref(),
        Ok("1"),
        "this test reads a real GPU: set KOHAKURIVER_GPU_TESTS=1 on a machine with an NVIDIA GPU and driver"
    );
    if let Err(err) = nvml_wrapper::Nvml::init() {
        panic!(
            "KOHAKURIVER_GPU_TESTS=1 but NVML cannot start ({err}): this machine has no usable NVIDIA driver"
        );
    }
    let inv = NvmlInventory::open(Path::new("/sys"));
    let gpus = inv.gpus();
    assert!(
        !gpus.is_empty(),
        "KOHAKURIVER_GPU_TESTS=1 but NVML sees no GPU on this machine"
    );
    let readings = inv.readings();
    assert_eq!(
        readings.len(),
        gpus.len(),
        "every GPU NVML lists should be readable: {gpus:?} vs {readings:?}"
    );
    for (gpu, r) in gpus.iter().zip(&readings) {
        assert_eq!(gpu.index, r.index);
        assert!(r.utilization_percent <= 100, "{r:?}");
        assert!(r.memory_total_bytes > 0, "{r:?}");
        assert!(r.memory_used_bytes <= r.memory_total_bytes, "{r:?}");
        assert_eq!(r.memory_total_bytes, gpu.memory_bytes, "{r:?}");
        if let Some(t) = r.temperature_celsius {
            assert!(
                (1..150).contains(&t),
                "a die temperature of {t} °C is not a reading: {r:?}"
            );
        }
        if let Some(w) = r.power_watts {
            assert!(w > 0.0 && w < 2000.0, "{w} W is not a reading: {r:?}");
        }
        println!("gpu {}: {r:?}", gpu.index);
    }
}
