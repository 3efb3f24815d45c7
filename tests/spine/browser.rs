//! The labeling page in a real headless Chromium (driven through chromedriver):
//! keyboard-only labeling of text and GIF pairs, synced clip controls, inert
//! rollout text, retried saves. Screenshots land in `target/screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver`; `.ci/run` installs them and
//! sets `BACKFLIP_REQUIRE_BROWSER=1`, so in CI a missing browser fails the run.
//! Elsewhere these tests say they are skipped.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use backflip::{auth::Role, import, projects};
use fantoccini::{
    Client, ClientBuilder, Locator,
    actions::{InputSource, KeyAction, KeyActions},
    key::Key,
};
use serde_json::{Value, json};

use crate::common::{TestApp, app};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A browser session against a real server on a random port.
struct Browser {
    client: Client,
    base: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start the server and a browser, or None (with a note) when no browser is installed.
async fn browser(app: &TestApp) -> Option<Browser> {
    if !std::path::Path::new(CHROMIUM).exists() || !std::path::Path::new(CHROMEDRIVER).exists() {
        if std::env::var_os("BACKFLIP_REQUIRE_BROWSER").is_some() {
            panic!("BACKFLIP_REQUIRE_BROWSER is set but {CHROMIUM} or {CHROMEDRIVER} is missing");
        }
        eprintln!(
            "skipped: install Debian's chromium and chromium-driver to run the browser tests"
        );
        return None;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(backflip::http::serve(
        listener,
        app.state.clone(),
        std::future::pending(),
    ));

    let port = free_port();
    let driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromedriver");
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
                "--window-size=1280,800",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("chromedriver did not start a session: {e}"),
        }
    };
    Some(Browser {
        client,
        base,
        driver,
        _profile: profile,
    })
}

impl Browser {
    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap();
    }

    /// Press keys on whatever has focus, as a person at the keyboard would.
    async fn press(&self, keys: &[char]) {
        for &k in keys {
            let actions = KeyActions::new("keyboard".into())
                .then(KeyAction::Down { value: k })
                .then(KeyAction::Up { value: k });
            self.client.perform_actions(actions).await.unwrap();
        }
    }

    async fn type_text(&self, text: &str) {
        self.press(&text.chars().collect::<Vec<_>>()).await;
    }

    async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Wait until a script returns something truthy; returns it.
    async fn until(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let v = self.js(script).await;
            if !(v.is_null() || v == json!(false) || v == json!("")) {
                return v;
            }
            if Instant::now() > deadline {
                let status = self.js("return document.getElementById('status')?.textContent + ' | ' + document.getElementById('error')?.textContent").await;
                panic!("timed out waiting for {what} (page status: {status})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Log in through the form, keyboard only.
    async fn login(&self, name: &str, password: &str) {
        self.goto("/login").await;
        self.client
            .find(Locator::Css("input[name=name]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.type_text(name).await;
        self.press(&[Key::Tab.into()]).await;
        self.type_text(password).await;
        self.press(&[Key::Enter.into()]).await;
        self.until(
            "the project list",
            "return location.pathname === '/' && document.title.startsWith('Projects')",
        )
        .await;
    }

    /// The assignment on screen, once the page shows a new one.
    async fn wait_new_pair(&self, previous: &str) -> String {
        let script = format!(
            "const v = document.getElementById('pair-view'); const a = document.getElementById('labeler').dataset.assignment;
             return (!v.hidden && a && a !== '{previous}') ? a : null"
        );
        self.until("the next pair", &script)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }
}

async fn rater(app: &TestApp, slug: &str, lead: &str) {
    app.user("keyboard", Role::Annotator).await;
    app.add_member(slug, lead, "keyboard", "annotator").await;
}

/// A text project of `pairs` pairs and its rater "keyboard", logged in on its
/// labeling page: the browser and the pair on screen.
async fn on_label_page(
    app: &TestApp,
    slug: &str,
    settings: Value,
    pairs: usize,
) -> Option<(Browser, String)> {
    let lead = app.project(slug, settings).await;
    app.import_text_pairs(slug, &lead, pairs).await;
    rater(app, slug, &lead).await;
    let b = browser(app).await?;
    b.login("keyboard", "password123").await;
    b.goto(&format!("/projects/{slug}/label")).await;
    let first = b.wait_new_pair("").await;
    Some((b, first))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_pairs_from_the_keyboard_alone() {
    let app = app().await;
    let lead = app
        .project("kb", json!({"content_warning": "Some answers are rude.", "instructions": "Pick the **kinder** answer."}))
        .await;
    let lines: String = (0..3)
        .map(|i| json!({"id": format!("t{i}"), "prompt": format!("Say hello ({i})"), "a": {"text": format!("Hello there, friend {i}.\n  indented line")}, "b": {"text": format!("Go away {i}.")}}).to_string() + "\n")
        .collect();
    assert!(
        app.post_raw("/api/v1/projects/kb/import", &lead, lines)
            .await
            .status
            .is_success()
    );
    rater(&app, "kb", &lead).await;
    let Some(b) = browser(&app).await else { return };
    b.login("keyboard", "password123").await;
    b.goto("/projects/kb/label").await;
    // The warning comes first; its button has focus.
    b.until(
        "the content warning",
        "return document.getElementById('warning')?.textContent.includes('Some answers are rude.')",
    )
    .await;
    // No timed read of progress in this test: the page's own counting shows.
    b.js("document.getElementById('labeler').dataset.progressEvery = '3600000'; return true")
        .await;
    b.press(&[Key::Enter.into()]).await;

    let progress_line = "return ['today', 'total', 'remaining'].map((k) => document.getElementById('p-' + k).textContent).join()";
    let mut previous = String::new();
    let keys: [char; 3] = [Key::Left.into(), Key::Right.into(), Key::Up.into()];
    for (i, key) in keys.into_iter().enumerate() {
        previous = b.wait_new_pair(&previous).await;
        if i == 2 {
            // Two answers saved, three pairs leased (the shown one, the
            // prefetch, and the one the first answer's call leased), and the
            // server not asked: the page counted them itself.
            b.until(
                "two answers counted",
                &format!("{progress_line} === '2,2,0'"),
            )
            .await;
            let calls = b
                .js("return window.__calls.filter((c) => c.endsWith('/progress'))")
                .await;
            assert_eq!(calls, json!([]), "progress read before the pairs ran out");
        }
        if i == 0 {
            // From here on, the page's calls are written down.
            b.js("window.__calls = []; const real = window.fetch; window.fetch = (u, i) => {
                    window.__calls.push(((i && i.method) || 'GET') + ' ' + new URL(String(u), location.href).pathname);
                    return real(u, i); }; return true").await;
            // Whitespace is preserved; the instructions are one key away.
            let pre = b
                .js("return getComputedStyle(document.querySelector('#left pre')).whiteSpace")
                .await;
            assert_eq!(pre, json!("pre-wrap"));
            b.press(&['i']).await;
            b.until("the instructions", "return document.getElementById('instructions').open && document.querySelector('#instructions strong')?.textContent === 'kinder'").await;
            b.press(&['?']).await;
            b.until("the key map", "return document.getElementById('keys').open")
                .await;
            b.press(&[Key::Escape.into()]).await;
            b.screenshot("label-text.png").await;
        }
        b.press(&[key]).await;
    }
    b.until(
        "the nothing-left screen",
        "return !document.getElementById('done').hidden",
    )
    .await;
    b.until("all three saved", "return document.getElementById('status').textContent === '' || document.getElementById('status').textContent === 'Saved.'").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // One call per answer judges the pair and leases the one after the
    // prefetched pair: no separate save, and no lease asked for on its own.
    let calls = b.js("return window.__calls").await;
    let (progress, calls): (Vec<&str>, Vec<&str>) = calls
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .partition(|c| c.ends_with("/progress"));
    assert_eq!(calls, ["POST /api/v1/projects/kb/next"; 3], "{calls:?}");
    // The page counts its own answers and leases and reads the server's
    // figures when it runs out of pairs, not after each answer.
    assert_eq!(
        progress,
        ["GET /api/v1/projects/kb/progress"],
        "progress read once, at the end"
    );
    b.until("the progress line", &format!("{progress_line} === '3,3,0'"))
        .await;

    let rows: Vec<(String, String, bool, Option<i32>)> = sqlx::query_as(
        "select j.displayed_choice, j.choice, j.left_is_a, j.duration_ms from judgments j order by j.created_at",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["left", "right", "tie"]
    );
    for (displayed, canonical, left_is_a, duration) in &rows {
        assert_eq!(
            canonical,
            backflip::labeling::canonical(displayed, *left_is_a)
        );
        assert!(
            duration.is_some_and(|d| d > 0),
            "the page measures time taken"
        );
    }
    let _ = b.client.clone().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gif_pairs_play_in_sync_and_record_replays() {
    let app = app().await;
    let lead_token = app.project("kbgif", json!({"media_kind": "gif"})).await;
    let lead = backflip::auth::user_by_token(&app.pool, &lead_token)
        .await
        .unwrap()
        .unwrap();
    let access = projects::access(&app.pool, &lead, "kbgif").await.unwrap();
    let mut lines = String::new();
    for i in 0..2u64 {
        for (side, skill) in [("a", 1.0), ("b", 0.0)] {
            let gif = backflip::clips::demo_clip(10 + i * 2 + u64::from(side == "b"), skill);
            import::ingest_clip(
                &app.pool,
                &app.state.clips,
                &access,
                &format!("c{i}{side}.gif"),
                gif.into(),
                &Default::default(),
            )
            .await
            .unwrap();
        }
        lines.push_str(&format!("{}\n", json!({"prompt": "Reach the goal", "a": {"clip": format!("c{i}a.gif")}, "b": {"clip": format!("c{i}b.gif")}})));
    }
    import::import(&app.pool, &access, lines.as_bytes())
        .await
        .unwrap();
    rater(&app, "kbgif", &lead_token).await;
    let Some(b) = browser(&app).await else { return };
    b.login("keyboard", "password123").await;
    b.goto("/projects/kbgif/label").await;

    let first = b.wait_new_pair("").await;
    // A quarter speed (before the clips are even decoded) keeps the first pass
    // long, so the steps below happen before it could have played through.
    b.press(&['[', '[']).await;
    b.until(
        "decoded clips",
        "return document.getElementById('clip-controls').dataset.ready === 'true'",
    )
    .await;
    // Pause, then step: both clips show the same frame, three frames on, then one back.
    let frames_js = "return [...document.querySelectorAll('#left canvas, #right canvas')].map(c => Number(c.dataset.frame))";
    b.press(&['p']).await;
    let start = b.js(frames_js).await;
    assert_eq!(start[0], start[1], "one clock");
    let f0 = start[0].as_u64().unwrap();
    b.press(&['.', '.', '.']).await;
    assert_eq!(
        b.js(frames_js).await,
        json!([(f0 + 3) % 20, (f0 + 3) % 20]),
        "both clips step together"
    );
    b.press(&[',']).await;
    assert_eq!(b.js(frames_js).await, json!([(f0 + 2) % 20, (f0 + 2) % 20]));
    b.screenshot("label-gif.png").await;
    // Replay (space), answer at once: one replay, answered before the clips ended.
    b.press(&[' ']).await;
    b.press(&[Key::Left.into()]).await;
    b.wait_new_pair(&first).await;
    b.until(
        "decoded clips",
        "return document.getElementById('clip-controls').dataset.ready === 'true'",
    )
    .await;
    // Back to 1× (the speed carries over), let the 1.6 s clips play through, then answer.
    b.press(&[']', ']']).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    b.press(&[Key::Right.into()]).await;
    b.until(
        "the nothing-left screen",
        "return !document.getElementById('done').hidden",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows: Vec<(String, Option<i32>, Option<bool>)> =
        sqlx::query_as("select displayed_choice, replays, answered_before_clip_end from judgments order by created_at")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        [
            ("left".into(), Some(1), Some(true)),
            ("right".into(), Some(0), Some(false))
        ]
    );
    let _ = b.client.clone().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_markup_never_runs_in_the_page() {
    let app = app().await;
    let lead = app.project("evil", json!({"instructions": "<script>window.__xss = 'instructions'</script>\n\n<img src=x onerror=\"window.__xss='img'\">"})).await;
    let line = json!({
        "prompt": "<img src=x onerror=\"window.__xss='prompt'\">",
        "a": {"text": "<script>window.__xss = 'a'</script> same words"},
        "b": {"text": "<a href=\"javascript:window.__xss='b'\">click</a> same words"},
    });
    assert!(
        app.post_raw("/api/v1/projects/evil/import", &lead, format!("{line}\n"))
            .await
            .status
            .is_success()
    );
    rater(&app, "evil", &lead).await;
    let Some(b) = browser(&app).await else { return };
    b.login("keyboard", "password123").await;
    b.goto("/projects/evil/label").await;
    b.wait_new_pair("").await;
    // The diff view re-renders the text: it must stay inert too.
    b.press(&['d']).await;
    b.until(
        "highlighted differences",
        "return document.querySelectorAll('#left mark, #right mark').length > 0",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.js("return window.__xss === undefined").await, json!(true));
    assert_eq!(b.js("return document.querySelectorAll('#left script, #left img, #right a, #prompt img, .instructions img[onerror]').length").await, json!(0));
    let shown = b.js("return document.getElementById('left').textContent + document.getElementById('right').textContent").await;
    let shown = shown.as_str().unwrap();
    assert!(
        shown.contains("<script>window.__xss = 'a'</script>")
            && shown.contains("<a href=\"javascript:"),
        "{shown}"
    );
    // On a phone-width screen the two rollouts stack, with no sideways scrolling.
    b.client.set_window_size(390, 844).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fits = b
        .js("return document.documentElement.scrollWidth <= window.innerWidth")
        .await;
    assert_eq!(fits, json!(true));
    let stacked = b.js("const l = document.getElementById('left').getBoundingClientRect(), r = document.getElementById('right').getBoundingClientRect(); return r.top >= l.bottom").await;
    assert_eq!(stacked, json!(true));
    b.screenshot("label-phone.png").await;
    let _ = b.client.clone().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_save_is_retried_with_the_same_key() {
    let app = app().await;
    let Some((b, first)) = on_label_page(&app, "flaky", json!({}), 4).await else {
        return;
    };
    // The network drops the first attempt to save a judgment before it leaves,
    // and the answer to the second after the server has stored it.
    b.js(
        "window.__fails = 2; window.__gets = 0; const real = window.fetch; window.fetch = (u, i) => {
            if (!(i && i.method === 'POST') && String(u).endsWith('/next')) window.__gets++;
            if (i && i.method === 'POST' && String(u).endsWith('/next') && window.__fails > 0) {
                window.__fails--;
                if (window.__fails === 1) return Promise.reject(new TypeError('offline'));
                return real(u, i).then(() => { throw new TypeError('connection reset'); });
            }
            return real(u, i); }; return true",
    )
    .await;
    b.press(&[Key::Left.into()]).await;
    b.until(
        "the retried save",
        "return document.getElementById('status').textContent === 'Saved.'",
    )
    .await;
    assert_eq!(b.js("return window.__fails").await, json!(0));
    assert_eq!(app.count("select count(*) from judgments").await, 1);
    // The page went on, and the rest of the pairs are judged once each.
    let mut previous = b.wait_new_pair(&first).await;
    for _ in 0..3 {
        b.press(&[Key::Right.into()]).await;
        b.until(
            "the next pair or the end",
            &format!(
                "return document.getElementById('labeler').dataset.assignment !== '{previous}'
                    || !document.getElementById('done').hidden"
            ),
        )
        .await;
        previous = b
            .js("return document.getElementById('labeler').dataset.assignment")
            .await
            .as_str()
            .unwrap()
            .to_owned();
    }
    b.until(
        "the nothing-left screen",
        "return !document.getElementById('done').hidden",
    )
    .await;
    // The end is shown once every save has settled.
    assert_eq!(
        app.count("select count(distinct comparison_id) from judgments")
            .await,
        4
    );
    assert_eq!(app.count("select count(*) from judgments").await, 4);
    // The retry was handed the pair the lost answer leased, so the page never
    // had to ask for one on its own.
    assert_eq!(b.js("return window.__gets").await, json!(0));
    let _ = b.client.clone().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_rationale_is_typed_and_sent_with_enter() {
    let app = app().await;
    let settings = json!({"rationale": "required", "strength_scale": 3});
    let Some((b, _first)) = on_label_page(&app, "why", settings, 1).await else {
        return;
    };
    // The answer key asks for the reason first and puts the cursor in its box.
    b.press(&[Key::Right.into()]).await;
    b.until(
        "the reason box focused",
        "return document.activeElement.id === 'rationale'",
    )
    .await;
    assert_eq!(app.count("select count(*) from judgments").await, 0);
    b.type_text("clearer and correct").await;
    b.press(&[Key::Enter.into()]).await;
    b.until(
        "the nothing-left screen",
        "return !document.getElementById('done').hidden",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let row: (String, Option<String>) =
        sqlx::query_as("select displayed_choice, rationale from judgments")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        row,
        ("right".to_owned(), Some("clearer and correct".to_owned()))
    );
    let _ = b.client.clone().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_break_or_a_pause_stops_the_page_at_the_next_answer() {
    let app = app().await;
    let Some((b, first)) = on_label_page(&app, "cap", json!({"session_cap_pairs": 2}), 5).await
    else {
        return;
    };
    b.press(&[Key::Left.into()]).await;
    b.wait_new_pair(&first).await;
    // The second answer reaches the cap: the break shows at once, not after
    // the pair the page had prefetched.
    b.press(&[Key::Left.into()]).await;
    let message = b
        .until(
            "the break screen",
            "return !document.getElementById('break').hidden && document.getElementById('break-message').textContent",
        )
        .await;
    assert!(message.as_str().unwrap().contains("2 pair(s)"), "{message}");
    assert_eq!(app.count("select count(*) from judgments").await, 2);

    // A rater the leads pause stops at their next answer too, and goes on
    // from "Try again" once resumed.
    let lead2 = app.project("hold", json!({})).await;
    app.import_text_pairs("hold", &lead2, 4).await;
    app.add_member("hold", &lead2, "keyboard", "annotator")
        .await;
    b.goto("/projects/hold/label").await;
    let first = b.wait_new_pair("").await;
    // Paused only once the page holds its prefetched pair.
    let deadline = Instant::now() + Duration::from_secs(15);
    while app
        .count("select count(*) from assignments a join projects p on p.id = a.project_id where p.slug = 'hold' and a.state = 'leased'")
        .await
        < 2
    {
        assert!(Instant::now() < deadline, "the page prefetched no pair");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.pause("hold", &lead2, "keyboard", true).await;
    b.press(&[Key::Right.into()]).await;
    b.until(
        "the paused screen",
        "return !document.getElementById('break').hidden && document.getElementById('break-message').textContent.includes('paused')",
    )
    .await;
    assert_eq!(
        app.count("select count(*) from judgments j join comparisons c on c.id = j.comparison_id join projects p on p.id = c.project_id where p.slug = 'hold'").await,
        1
    );
    app.pause("hold", &lead2, "keyboard", false).await;
    b.client
        .find(Locator::Id("break-retry"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_new_pair(&first).await;
    let _ = b.client.clone().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_after_a_save_whose_lease_failed_shows_another_pair() {
    let app = app().await;
    let Some((b, first)) = on_label_page(&app, "lag", json!({}), 5).await else {
        return;
    };
    // The first save is stored, but its answer says the lease that followed
    // failed (the server leased a pair all the same).
    b.js("window.__lag = 1; const real = window.fetch; window.fetch = (u, i) => {
            const p = real(u, i);
            if (!(i && i.method === 'POST' && String(u).endsWith('/next') && window.__lag > 0)) return p;
            window.__lag--;
            return p.then(async (r) => {
                const d = await r.json();
                d.next = null;
                d.next_error = {code: 'unavailable', message: 'the lease took too long'};
                return new Response(JSON.stringify(d), {status: r.status, headers: {'Content-Type': 'application/json'}});
            }); }; return true")
        .await;
    b.press(&[Key::Left.into()]).await;
    let second = b.wait_new_pair(&first).await;
    assert_eq!(b.js("return window.__lag").await, json!(0));
    // Reported, that pair leaves; the page asks for another instead of
    // showing the failed lease's error.
    b.press(&['r']).await;
    b.type_text("broken pair").await;
    b.js("document.getElementById('report-form').requestSubmit(); return true")
        .await;
    let third = b.wait_new_pair(&second).await;
    assert_ne!(third, first);
    assert_eq!(
        b.js("return document.getElementById('error').hidden").await,
        json!(true)
    );
    assert_eq!(app.count("select count(*) from judgments").await, 1);
    assert_eq!(app.count("select count(*) from content_reports").await, 1);
    let _ = b.client.clone().close().await;
}
