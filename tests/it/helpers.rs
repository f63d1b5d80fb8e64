//! Shared helpers: paths, compiling pipeline text, tracing for `TEST_LOG=1`.

use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use caly::engine::graph::Graph;
use caly::engine::registry::CompileOptions;
use caly::engine::spec::PipelineSpec;

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    }
});

/// Turns on logging when `TEST_LOG` is set.
pub(crate) fn init() {
    LazyLock::force(&TRACING);
}

/// A path inside the repository.
pub(crate) fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Compiles pipeline TOML text with options.
///
/// # Panics
///
/// When it does not compile.
pub(crate) fn compile_with(text: &str, options: CompileOptions) -> Arc<Graph> {
    init();
    let spec = PipelineSpec::parse(text, "<test>").unwrap_or_else(|e| panic!("{e}"));
    Graph::compile(&spec, &caly::testing::registry(), &options).unwrap_or_else(|e| panic!("{e}"))
}

/// A server running on 127.0.0.1 with a port of its own.
pub(crate) struct TestApp {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Its shared state (counters, admission).
    pub state: caly::http::AppState,
    /// Each call's report, as it ends.
    pub reports: tokio::sync::mpsc::Receiver<caly::call::CallReport>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: TempDir,
}

/// A directory removed when dropped.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory under the system's temp dir.
    pub(crate) fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "caly-{tag}-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

static NEXT_DIR: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// `pipelines/tone_bot.toml` with its turn reply `turn_ms` long.
pub(crate) fn tone_bot(turn_ms: u32) -> String {
    std::fs::read_to_string(repo("pipelines/tone_bot.toml"))
        .unwrap()
        .replace("turn_ms = 1000", &format!("turn_ms = {turn_ms}"))
}

/// Starts a server running `pipeline` (TOML text), with `tweak` applied to its settings.
pub(crate) async fn spawn_app(
    pipeline: &str,
    tweak: impl FnOnce(&mut caly::settings::ServeArgs),
) -> TestApp {
    spawn_app_with(pipeline, tweak, caly::stages::services_from_env()).await
}

/// As [`spawn_app`], with the outside services given.
pub(crate) async fn spawn_app_with(
    pipeline: &str,
    tweak: impl FnOnce(&mut caly::settings::ServeArgs),
    services: caly::engine::stage::Services,
) -> TestApp {
    init();
    let dir = TempDir::new("app");
    let path = dir.0.join("pipeline.toml");
    std::fs::write(&path, pipeline).unwrap();
    let mut args = caly::settings::ServeArgs::local(path);
    args.database_url = format!("sqlite://{}", dir.0.join("caly.db").display());
    tweak(&mut args);
    let mut app = caly::app::App::build_with(&args, services).await.unwrap();
    let reports = app.reports(10_000);
    let addr = app.local_addr().unwrap();
    let state = app.state().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        state,
        reports,
        stop: Some(stop),
        server: Some(server),
        _dir: dir,
    }
}

impl TestApp {
    /// The stream URL with `query`.
    pub(crate) fn url(&self, query: &str) -> String {
        format!("ws://{}/v1/exotel/stream?{query}", self.addr)
    }

    /// The next call report.
    pub(crate) async fn report(&mut self) -> caly::call::CallReport {
        caly::testing::within(
            std::time::Duration::from_secs(20),
            "a call report",
            self.reports.recv(),
        )
        .await
        .expect("reports channel open")
    }

    /// Begins shutdown (as SIGTERM would).
    pub(crate) fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for the server to have stopped.
    pub(crate) async fn stopped(&mut self) -> anyhow::Result<()> {
        let server = self.server.take().expect("not awaited yet");
        caly::testing::within(
            std::time::Duration::from_secs(30),
            "the server to stop",
            server,
        )
        .await
        .unwrap()
    }
}

/// A database for one test: a SQLite file in a temp dir, or a fresh PostgreSQL database
/// created on the server `TEST_DATABASE_URL` names (dropped by [`TestDb::drop_db`]).
pub(crate) struct TestDb {
    /// `sqlite` or `postgres`.
    pub label: &'static str,
    /// Where it is.
    pub url: String,
    admin: Option<(String, String)>,
    _dir: Option<TempDir>,
}

impl TestDb {
    /// Removes a PostgreSQL test database (SQLite files go with their directory).
    pub(crate) async fn drop_db(self) {
        if let Some((admin, name)) = &self.admin
            && let Ok(store) = caly::store::Store::connect_with(admin, 1).await
        {
            let _ = store
                .execute_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
            store.close().await;
        }
    }
}

static SKIP_NOTE: std::sync::Once = std::sync::Once::new();

/// A fresh SQLite database, and a fresh PostgreSQL one when `TEST_DATABASE_URL` is set (else
/// a note that those runs were skipped).
pub(crate) async fn test_dbs() -> Vec<TestDb> {
    let mut dbs = vec![sqlite_db()];
    match postgres_db().await {
        Some(db) => dbs.push(db),
        None => SKIP_NOTE.call_once(|| {
            eprintln!(
                "PostgreSQL runs of the records tests SKIPPED: TEST_DATABASE_URL is not set."
            );
        }),
    }
    dbs
}

/// A fresh SQLite database file.
pub(crate) fn sqlite_db() -> TestDb {
    init();
    let dir = TempDir::new("db");
    TestDb {
        label: "sqlite",
        url: format!("sqlite://{}", dir.0.join("caly.db").display()),
        admin: None,
        _dir: Some(dir),
    }
}

/// A fresh PostgreSQL database, if `TEST_DATABASE_URL` is set.
pub(crate) async fn postgres_db() -> Option<TestDb> {
    init();
    match std::env::var("TEST_DATABASE_URL") {
        Ok(admin) if !admin.is_empty() => {
            let name = format!("caly_test_{}", uuid::Uuid::now_v7().simple());
            let store = caly::store::Store::connect_with(&admin, 1)
                .await
                .expect("TEST_DATABASE_URL is set but PostgreSQL cannot be reached");
            store
                .execute_admin(&format!("CREATE DATABASE {name}"))
                .await
                .expect("cannot create a test database");
            store.close().await;
            let (base, query) = admin
                .split_once('?')
                .map_or((admin.as_str(), None), |(b, q)| (b, Some(q)));
            let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
            let url = match query {
                Some(q) => format!("{base}/{name}?{q}"),
                None => format!("{base}/{name}"),
            };
            Some(TestDb {
                label: "postgres",
                url,
                admin: Some((admin.clone(), name)),
                _dir: None,
            })
        }
        _ => None,
    }
}

/// The speech fixture's first utterance and the silence after it (0–4.5 s at 8 kHz).
pub(crate) fn utterance() -> Vec<i16> {
    let (_, pcm) =
        caly::testing::read_wav_mono(&repo("fixtures/audio/speech_en_hi_8k.wav")).unwrap();
    pcm[..36_000].to_vec()
}

/// One caller turn: `pcm` in 20 ms media messages (a little faster than real time), then the
/// first six chunks of the bot's answer, echoing its marks as Exotel does.
pub(crate) async fn take_a_turn(c: &mut caly::devtools::simulate::ExotelClient, pcm: &[i16]) {
    use caly::devtools::simulate::ServerMessage;
    for chunk in pcm.chunks(160) {
        c.media(chunk).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(4)).await;
    }
    let mut chunks = 0;
    caly::testing::within(
        std::time::Duration::from_secs(30),
        "the bot's answer",
        async {
            while chunks < 6 {
                match c.recv().await {
                    Some(ServerMessage::Media(_)) => chunks += 1,
                    Some(ServerMessage::Mark(name)) => c.mark(&name).await.unwrap(),
                    Some(_) => {}
                    None => panic!("the server closed the call mid-turn"),
                }
            }
        },
    )
    .await;
}

/// Starts the real `caly serve` on a free 127.0.0.1 port with `args` (and `env`), its stderr to
/// `stderr`, and waits until `/healthz` answers. Returns the child and its address.
pub(crate) async fn spawn_binary(
    args: &[&str],
    env: &[(&str, &str)],
    stderr: std::process::Stdio,
) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_caly"));
    cmd.args(["serve", "--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(args)
        .env_remove("OPENAI_API_KEY")
        .env_remove("CALY_LOG_FORMAT")
        .stdout(std::process::Stdio::null())
        .stderr(stderr);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let addr = format!("127.0.0.1:{port}");
    caly::testing::within(
        std::time::Duration::from_secs(30),
        "the server to come up",
        async {
            while caly::devtools::simulate::http_get(&addr, "/healthz")
                .await
                .is_err()
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        },
    )
    .await;
    (child, addr)
}

/// Sends SIGTERM to `child`, as Railway and Docker do.
pub(crate) fn sigterm(child: &std::process::Child) {
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
}

/// Waits (up to `secs`) for `child` to exit and asserts it exited with status 0.
pub(crate) async fn exits_cleanly(mut child: std::process::Child, secs: u64) {
    let status = caly::testing::within(
        std::time::Duration::from_secs(secs),
        "the server to exit",
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "{status:?}");
}
