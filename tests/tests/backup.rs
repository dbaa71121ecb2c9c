//! Online backup and restore with the real binary: `kohakuriver backup --to FILE` while a
//! writer keeps creating tasks, `kohakuriver server --restore FILE`, and a watcher of the
//! old store that must list again (410) rather than resume into the restored one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use kohakuriver_api::Task;
use kohakuriver_client::watcher::Event;
use kohakuriver_client::{Client, ClientOptions, ListParams};
use kohakuriver_tests::{Cluster, wait_until};

const T: Duration = Duration::from_secs(60);

fn admin(c: &Cluster) -> Client {
    let options = ClientOptions {
        token: Some(c.admin_token()),
        ..Default::default()
    };
    Client::with_options(c.url(), options).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn task(name: String) -> Task {
    Task::new(name, vec!["true".to_string()])
}

/// The names of the stored tasks, sorted by their number (`w17` → 17).
fn task_numbers(c: &Cluster) -> Vec<usize> {
    let list = c.get_json("tasks").expect("the task list");
    let mut numbers: Vec<usize> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| {
            t["metadata"]["name"]
                .as_str()?
                .strip_prefix('w')?
                .parse()
                .ok()
        })
        .collect();
    numbers.sort();
    numbers
}

/// One writer creates w0, w1, … one after another (each acknowledged before the next) while
/// `backup` runs. The backup holds every task acknowledged before it started and, since
/// it is one consistent snapshot, exactly w0..wk for some k: never a later task without an
/// earlier one.
#[test]
fn a_backup_under_write_load_restores_a_consistent_prefix() {
    let mut c = Cluster::start();
    let rt = runtime();
    let api = admin(&c).api::<Task>();
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = rt.spawn({
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                api.create(&task(format!("w{i}"))).await.expect("create");
                i += 1;
                acknowledged.store(i, Ordering::SeqCst);
            }
        }
    });
    wait_until(T, "the writer's first 50 tasks", || {
        acknowledged.load(Ordering::SeqCst) >= 50
    });
    let before = acknowledged.load(Ordering::SeqCst);
    let file = c.dir().join("backup.db");
    let run = c.kr(&["backup", "--to", &file.display().to_string()]);
    run.ok().stdout_has("written to");
    let after = acknowledged.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    rt.block_on(writer).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the backup holds token hashes and keys"
        );
    }
    // A second backup to the same file is refused rather than overwriting it.
    c.kr(&["backup", "--to", &file.display().to_string()])
        .fails()
        .stderr_has("already exists");

    // Restored in place of the store it came from (whose admin token it holds).
    c.restart_server_with(&["--restore", file.to_str().unwrap(), "--force"]);
    let numbers = task_numbers(&c);
    let k = numbers.len();
    eprintln!("[backup] {k} tasks in the backup; {before} acknowledged before it, {after} after");
    assert!(
        numbers.iter().copied().eq(0..k),
        "the backup must hold a prefix w0..w{k}, got {numbers:?}"
    );
    assert!(
        k >= before && k <= after + 1,
        "the backup holds {k} tasks; {before} were acknowledged before it started, {after} when it ended"
    );
}

/// A restore is refused over an existing database, and with --force moves it aside.
#[test]
fn a_restore_never_overwrites_a_database_silently() {
    let mut c = Cluster::start();
    let rt = runtime();
    rt.block_on(admin(&c).api::<Task>().create(&task("kept".into())))
        .unwrap();
    let file = c.dir().join("backup.db");
    c.kr(&["backup", "--to", &file.display().to_string()]).ok();
    c.kill_server();
    let db = c.dir().join("kr.db");
    let data_dir = c.dir().join("server");
    let args = |extra: &[&str]| {
        let mut args = vec![
            "server",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--restore",
            file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = kohakuriver_tests::Run::exec(kohakuriver_tests::binary(), &args(&[]), T);
    run.fails().stderr_has("already exists");
    assert!(db.is_file());
    // --force moves the old database aside; the restored server then serves the backup.
    c.restart_server_with(&["--restore", file.to_str().unwrap(), "--force"]);
    assert!(c.task("kept")["metadata"]["name"] == "kept");
    let aside = std::fs::read_dir(c.dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("kr.db.before-restore-")
        });
    assert!(aside, "the old database must be kept aside");
}

/// A watcher of the old store keeps watching across a restore on the same address: the
/// restored store has a new id, so its resume is answered 410 and it lists again, reporting
/// the restored state (without what was written after the backup).
#[test]
fn a_watcher_of_the_old_store_lists_again_after_a_restore() {
    let mut c = Cluster::start();
    let rt = runtime();
    let client = admin(&c);
    let api = client.api::<Task>();
    rt.block_on(api.create(&task("w0".into()))).unwrap();
    let file = c.dir().join("backup.db");
    c.kr(&["backup", "--to", &file.display().to_string()]).ok();
    // Written after the backup: gone once the backup is restored.
    for i in 1..20 {
        rt.block_on(api.create(&task(format!("w{i}")))).unwrap();
    }
    let old = rt.block_on(api.list(&ListParams::default())).unwrap();
    let (restarts, seen) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let watching = rt.spawn({
        let (restarts, seen) = (restarts.clone(), seen.clone());
        let mut events = api.watcher(ListParams::default());
        async move {
            while let Some(event) = events.next().await {
                if let Ok(Event::Restarted(tasks)) = event {
                    restarts.fetch_add(1, Ordering::SeqCst);
                    seen.store(tasks.len(), Ordering::SeqCst);
                }
            }
        }
    });
    wait_until(T, "the watcher's first list", || {
        restarts.load(Ordering::SeqCst) == 1
    });
    assert_eq!(seen.load(Ordering::SeqCst), 20);

    c.restart_server_with(&["--restore", file.to_str().unwrap(), "--force"]);
    wait_until(T, "the watcher to list the restored store", || {
        restarts.load(Ordering::SeqCst) >= 2 && seen.load(Ordering::SeqCst) == 1
    });
    watching.abort();

    // Even once the restored store's revision passes the old list's, a resume naming the
    // old store is 410; the revision number alone would not tell.
    let fresh = admin(&c).api::<Task>();
    for i in 100..130 {
        rt.block_on(fresh.create(&task(format!("w{i}")))).unwrap();
    }
    let now = rt.block_on(fresh.list(&ListParams::default())).unwrap();
    assert!(now.metadata.resource_version > old.metadata.resource_version);
    assert_ne!(now.metadata.store_id, old.metadata.store_id);
    let resumed = rt.block_on(fresh.watch(
        &ListParams::default(),
        old.metadata.resource_version,
        old.metadata.store_id.as_deref(),
    ));
    let e = resumed
        .err()
        .expect("a resume into another store must fail");
    assert!(e.is_gone(), "{e}");
}

/// A restore on another machine (a data dir without `admin.token`) makes an admin token
/// there, so the operator can act on the restored store at once; the backup's own admin
/// token keeps working too.
#[test]
fn a_restore_into_a_data_dir_without_an_admin_token_makes_one() {
    let mut c = Cluster::start();
    let rt = runtime();
    rt.block_on(admin(&c).api::<Task>().create(&task("kept".into())))
        .unwrap();
    let old_token = c.admin_token();
    let file = c.dir().join("backup.db");
    c.kr(&["backup", "--to", &file.display().to_string()]).ok();
    c.kill_server();
    let token_file = c.dir().join("server").join("admin.token");
    std::fs::remove_file(&token_file).expect("the first start wrote admin.token");
    c.restart_server_with(&["--restore", file.to_str().unwrap(), "--force"]);
    let new_token = c.admin_token();
    assert_ne!(new_token, old_token, "a new admin token is written");
    for token in [new_token, old_token] {
        let options = ClientOptions {
            token: Some(token),
            ..Default::default()
        };
        let client = Client::with_options(c.url(), options).unwrap();
        let who = rt.block_on(client.whoami()).expect("whoami");
        assert_eq!(who.role.to_string(), "admin");
        let kept = rt.block_on(client.api::<Task>().get("kept")).unwrap();
        assert_eq!(kept.metadata.name, "kept");
    }
}

/// A `FILE.partial` left by a backup that was killed is replaced by the next backup, which
/// then succeeds; a finished backup leaves no partial file behind.
#[test]
fn a_partial_file_left_by_a_killed_backup_does_not_block_the_next() {
    let c = Cluster::start();
    let file = c.dir().join("again.db");
    let partial = c.dir().join("again.db.partial");
    std::fs::write(&partial, b"half a download").unwrap();
    c.kr(&["backup", "--to", &file.display().to_string()])
        .ok()
        .stderr_has("left by an interrupted backup");
    assert!(!partial.exists(), "the partial file is gone");
    kohakuriver_apiserver::check_backup(&file).expect("a checked backup");
}
