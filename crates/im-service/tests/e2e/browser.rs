//! The browser app (`/` on the gateway's WebSocket port: crates/im-gateway/web)
//! in headless Chromium, driven over WebDriver as people would use it: one
//! browser per person, signing in with a password, chatting, reading, going
//! offline and coming back, a group of three, and a message that looks like
//! HTML. The same scenario runs in embedded mode (one node) and in
//! production (im-user, two nodes, two gateways: bob's browser is on the
//! other gateway than alice's and carol's).
//!
//! The pages are read through the DOM contract of `web/index.html` and
//! `web/app.js` (ids, classes, `data-*`), never by timing: every wait polls
//! the page every 50 ms up to a deadline and fails saying what it did not
//! see. A screenshot of every step goes to
//! `target/browser-screenshots/{embedded,production}/NN-step.png`, and one
//! of the page that failed to `failed-<who>.png` beside them.
//!
//! Needs `chromium` and `chromedriver` (Debian: chromium, chromium-driver;
//! scripts/test.sh installs them); the tests fail, naming them, without.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::harness::{Cluster, ClusterBuilder, User};
use crate::support::{Node, conversation_id, free_port};

const PASSWORD: &str = "browser test password";
/// How long a page may take to show what a step waits for: three Chromiums,
/// the servers and the processes under test share a noisy 2-core machine.
const UI_WAIT: Duration = Duration::from_secs(15);
/// How often a wait reads the page.
const POLL: Duration = Duration::from_millis(50);
/// From alice's click on Send to bob's page showing the message.
const DELIVERY_LIMIT: Duration = Duration::from_secs(1);
/// Offline messages alice sends while bob's browser is closed.
const OFFLINE_MESSAGES: usize = 50;

// ---------------------------------------------------------------------------
// chromedriver and Chromium.

/// The path of executable `name` on PATH; panics naming the packages when it
/// is missing: these tests are never skipped.
fn require_browser_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file()).unwrap_or_else(|| {
        panic!(
            "{name} is not installed (not on PATH): the browser tests need the Debian packages chromium and \
             chromium-driver (scripts/test.sh installs them: apt-get install chromium chromium-driver)"
        )
    })
}

/// A `chromedriver` on a free loopback port. Dropping it (also when a test
/// panicked before it closed its sessions) asks it to shut down, which quits
/// every Chromium it started, then kills it. It stays in the test's process
/// group, with its Chromiums: a signal nextest sends the test (a timeout,
/// Ctrl-C) reaches them too.
struct ChromeDriver {
    child: Child,
    port: u16,
    chromium: PathBuf,
}

impl ChromeDriver {
    async fn start() -> ChromeDriver {
        let chromium = require_browser_binary("chromium");
        let chromedriver = require_browser_binary("chromedriver");
        let port = free_port();
        let child = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", chromedriver.display()));
        let mut driver = ChromeDriver { child, port, chromium };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if driver_ready(port).await {
                return driver;
            }
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!("chromedriver exited during start-up: {status}");
            }
            assert!(Instant::now() < deadline, "chromedriver not ready on port {port} within 20 s");
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Whether chromedriver's `GET /status` says it is ready. Read until the
/// answer is in, not to the end: chromedriver answers `Connection: close`
/// and leaves the connection open.
async fn driver_ready(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"GET /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await?;
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let read = stream.read(&mut chunk).await?;
            answer.extend_from_slice(&chunk[..read]);
            let text = String::from_utf8_lossy(&answer);
            if read == 0 || text.contains(r#""ready":true"#) {
                return std::io::Result::Ok(text.starts_with("HTTP/1.1 200") && text.contains(r#""ready":true"#));
            }
        }
    };
    matches!(tokio::time::timeout(Duration::from_secs(2), ask).await, Ok(Ok(true)))
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = shutdown(self.port);
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// chromedriver's `GET /shutdown` (blocking: for `Drop`): it quits its
/// browsers, answers, and exits.
fn shutdown(port: u16) -> std::io::Result<()> {
    use std::io::{Read as _, Write as _};
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /shutdown HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let _ = stream.read(&mut [0u8; 1024])?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Screenshots.

/// Where the screenshots of one mode go, numbered in the order taken.
struct Shots {
    dir: PathBuf,
    taken: Cell<u32>,
}

impl Shots {
    /// `target/browser-screenshots/<mode>/`, emptied of an earlier run's.
    fn new(mode: &str) -> Shots {
        let dir = target_dir().join("browser-screenshots").join(mode);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            if entry.path().extension().is_some_and(|ext| ext == "png") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        println!("{mode}: screenshots go to {}", dir.display());
        Shots { dir, taken: Cell::new(0) }
    }

    /// `NN-step.png` of `page`.
    async fn take(&self, page: &Page, step: &str) {
        self.taken.set(self.taken.get() + 1);
        let path = self.dir.join(format!("{:02}-{step}.png", self.taken.get()));
        page.screenshot_to(&path).await;
    }
}

/// The Cargo target directory: `CARGO_TARGET_DIR` when it is absolute, else
/// the folder above the test binary that Cargo marked with `CACHEDIR.TAG`.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from)
        && dir.is_absolute()
    {
        return dir;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        // target/<profile>/deps/<binary>
        .or_else(|| exe.ancestors().nth(3))
        .expect("a target directory above the test binary")
        .to_path_buf()
}

// ---------------------------------------------------------------------------
// One browser.

/// One person's browser: its own Chromium, profile and sessionStorage.
struct Page {
    who: String,
    client: Client,
    shots: Rc<Shots>,
    /// Chromium's `--user-data-dir`; removed after the browser.
    _profile: tempfile::TempDir,
}

/// The `textContent` of element `element` (exact, whether shown or not).
async fn content(element: &Element) -> Result<String, String> {
    element.prop("textContent").await.map(Option::unwrap_or_default).map_err(|e| e.to_string())
}

impl Page {
    /// Starts a browser for `who` and loads the app at `url`.
    async fn open(driver: &ChromeDriver, who: &str, url: &str, shots: Rc<Shots>) -> Page {
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": driver.chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else { unreachable!() };
        let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(capabilities);
        let webdriver = format!("http://127.0.0.1:{}", driver.port);
        let client = tokio::time::timeout(Duration::from_secs(60), builder.connect(&webdriver))
            .await
            .unwrap_or_else(|_| panic!("{who}'s browser: no WebDriver session within 60 s"))
            .unwrap_or_else(|e| panic!("{who}'s browser: starting Chromium through chromedriver: {e}"));
        let page = Page { who: who.to_owned(), client, shots, _profile: profile };
        page.client.goto(url).await.unwrap_or_else(|e| panic!("{who}'s browser: loading {url}: {e}"));
        page.wait("the sign-in form", UI_WAIT, async || {
            page.displayed("#login-form").await?.then_some(()).ok_or_else(|| "hidden".to_owned())
        })
        .await;
        page
    }

    /// Ends the session: Chromium quits, and with it the app's WebSocket.
    async fn close(self) {
        let who = self.who.clone();
        self.client.close().await.unwrap_or_else(|e| panic!("{who}'s browser: closing: {e}"));
    }

    async fn find(&self, css: &str) -> Result<Element, String> {
        self.client.find(Locator::Css(css)).await.map_err(|e| format!("no {css} ({e})"))
    }

    /// The element `css`, which must be there now (an action's target).
    async fn element(&self, css: &str) -> Element {
        self.find(css).await.unwrap_or_else(|e| panic!("{}'s page: {e}", self.who))
    }

    /// The `textContent` of the first element `css`.
    async fn text(&self, css: &str) -> Result<String, String> {
        content(&self.find(css).await?).await
    }

    /// The `textContent` of every element `css`, in document order.
    async fn texts(&self, css: &str) -> Result<Vec<String>, String> {
        let elements = self.client.find_all(Locator::Css(css)).await.map_err(|e| e.to_string())?;
        let mut texts = Vec::with_capacity(elements.len());
        for element in &elements {
            texts.push(content(element).await?);
        }
        Ok(texts)
    }

    /// Attribute `name` of the first element `css`.
    async fn attr(&self, css: &str, name: &str) -> Result<Option<String>, String> {
        self.find(css).await?.attr(name).await.map_err(|e| e.to_string())
    }

    async fn displayed(&self, css: &str) -> Result<bool, String> {
        self.find(css).await?.is_displayed().await.map_err(|e| e.to_string())
    }

    /// Replaces the value of the input or textarea `css` by `text`, typed.
    async fn fill(&self, css: &str, text: &str) {
        let element = self.element(css).await;
        element.clear().await.unwrap_or_else(|e| panic!("{}'s page: clearing {css}: {e}", self.who));
        element.send_keys(text).await.unwrap_or_else(|e| panic!("{}'s page: typing into {css}: {e}", self.who));
    }

    async fn click(&self, css: &str) {
        self.element(css).await.click().await.unwrap_or_else(|e| panic!("{}'s page: clicking {css}: {e}", self.who));
    }

    /// Types `text` into the compose box and presses Enter (which sends).
    async fn type_and_enter(&self, text: &str) {
        let keys = format!("{text}{}", char::from(Key::Enter));
        self.element("#compose-input")
            .await
            .send_keys(&keys)
            .await
            .unwrap_or_else(|e| panic!("{}'s page: typing {text:?}: {e}", self.who));
    }

    async fn screenshot_to(&self, path: &Path) {
        let png = self.client.screenshot().await.unwrap_or_else(|e| panic!("{}'s page: screenshot: {e}", self.who));
        std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// Polls `probe` every 50 ms until it returns `Ok`, for at most
    /// `within`; then fails, saying what was awaited and what `probe` saw
    /// last, with a screenshot of the page (`failed-<who>.png`).
    async fn wait<T>(&self, what: &str, within: Duration, mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
        let deadline = Instant::now() + within;
        loop {
            let last = match probe().await {
                Ok(value) => return value,
                Err(seen) => seen,
            };
            if Instant::now() >= deadline {
                let shot = self.shots.dir.join(format!("failed-{}.png", self.who));
                if let Ok(png) = self.client.screenshot().await {
                    let _ = std::fs::write(&shot, png);
                }
                panic!(
                    "{}'s page: {what}: not seen within {within:?}; last seen: {last} (screenshot: {})",
                    self.who,
                    shot.display()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `css`'s text is `expected`.
    async fn wait_text(&self, css: &str, expected: &str) {
        self.wait(&format!("{css} showing {expected:?}"), UI_WAIT, async || {
            let text = self.text(css).await?;
            if text == expected { Ok(()) } else { Err(format!("{css} is {text:?}")) }
        })
        .await
    }

    /// Fills in the sign-in form and submits it.
    async fn submit_sign_in(&self, name: &str, password: &str) {
        self.fill("#login-name", name).await;
        self.fill("#login-password", password).await;
        self.click("#login-submit").await;
    }

    /// Signs in as `name` and waits until the app shows, signed in and online.
    async fn sign_in(&self, name: &str) {
        self.submit_sign_in(name, PASSWORD).await;
        self.wait("the app, signed in", UI_WAIT, async || {
            if !self.displayed("#app").await? {
                return Err(format!("#app hidden; #login-error is {:?}", self.text("#login-error").await?));
            }
            if self.displayed("#login-form").await? {
                return Err("the sign-in form is still shown".to_owned());
            }
            Ok(())
        })
        .await;
        self.wait_text("#me", name).await;
        self.wait_text("#status", "online").await;
        assert_eq!(self.text("#login-error").await.unwrap(), "", "{}'s page: a sign-in error is left", self.who);
    }

    /// The token the app keeps in this tab's sessionStorage, if any.
    async fn stored_token(&self) -> Option<String> {
        let value = self
            .client
            .execute("return window.sessionStorage.getItem('im.token');", Vec::new())
            .await
            .unwrap_or_else(|e| panic!("{}'s page: reading sessionStorage: {e}", self.who));
        value.as_str().map(str::to_owned)
    }

    /// Opens the conversation `conversation` from the list; waits for its
    /// title.
    async fn open_conversation(&self, conversation: &str, title: &str) {
        let item = format!(r#"li.conversation[data-conversation="{conversation}"]"#);
        self.wait(&format!("{item} in the conversation list"), UI_WAIT, async || self.find(&item).await).await;
        self.click(&item).await;
        self.wait_text("#conversation-title", title).await;
    }

    /// The `.msg-body` texts of the open conversation, oldest first.
    async fn bodies(&self) -> Result<Vec<String>, String> {
        self.texts("#messages li.message .msg-body").await
    }

    /// (`.msg-from`, `.msg-body`) of every message of the open conversation.
    async fn senders_and_bodies(&self) -> Result<Vec<(String, String)>, String> {
        let from = self.texts("#messages li.message .msg-from").await?;
        let bodies = self.bodies().await?;
        if from.len() != bodies.len() {
            return Err(format!("{} senders for {} bodies (the list changed while read)", from.len(), bodies.len()));
        }
        Ok(from.into_iter().zip(bodies).collect())
    }

    /// The `.msg-status` texts of this user's own messages, oldest first.
    async fn statuses(&self) -> Result<Vec<String>, String> {
        self.texts("#messages li.message.mine .msg-status").await
    }

    /// Sends `text` in the open conversation with Enter, and waits until the
    /// app shows it sent (a seq, the status `sent` or `read`).
    async fn send(&self, text: &str) {
        self.type_and_enter(text).await;
        self.wait(&format!("{text:?} sent"), UI_WAIT, async || {
            let bodies = self.texts("#messages li.message.mine .msg-body").await?;
            let statuses = self.statuses().await?;
            let seqs =
                self.client.find_all(Locator::Css("#messages li.message.mine")).await.map_err(|e| e.to_string())?;
            let at = bodies.iter().rposition(|body| body == text).ok_or_else(|| summary("own bodies", &bodies))?;
            let seq = seqs.get(at).ok_or("list changed")?.attr("data-seq").await.map_err(|e| e.to_string())?;
            match (seq.unwrap_or_default().as_str(), statuses.get(at).map(String::as_str)) {
                ("", _) => Err("no seq yet".to_owned()),
                (_, Some("sent" | "read")) => Ok(()),
                (_, status) => Err(format!("status {status:?}")),
            }
        })
        .await;
    }
}

// ---------------------------------------------------------------------------
// The scenario.

/// Where the pages load the app from, and when a signed-in page's
/// connection is in place.
enum Server<'a> {
    Embedded(&'a Node),
    /// alice and carol on gateway 0, bob on gateway 1.
    Production(&'a Cluster),
}

struct Person {
    name: &'static str,
    id: u64,
    /// The gateway its browser uses (production).
    gateway: usize,
}

impl Server<'_> {
    fn app_url(&self, person: &Person) -> String {
        let port = match self {
            Server::Embedded(node) => node.ws_port,
            Server::Production(cluster) => cluster.ws_port(person.gateway),
        };
        format!("http://127.0.0.1:{port}/")
    }

    /// Once the page shows `online`: in production, also until the gateway
    /// registered the user (the nodes push through the registry), as every
    /// production test waits for its clients.
    async fn connected(&self, person: &Person) {
        if let Server::Production(cluster) = self {
            cluster.wait_registered(&User { id: person.id, token: String::new() }, person.gateway).await;
        }
    }

    /// A browser for `person`, signed in.
    async fn signed_in(&self, driver: &ChromeDriver, person: &Person, shots: &Rc<Shots>) -> Page {
        let page = Page::open(driver, person.name, &self.app_url(person), shots.clone()).await;
        page.sign_in(person.name).await;
        self.connected(person).await;
        page
    }
}

/// The scenario of the web app, wherever the gateway is.
async fn people_chat_in_the_browser(server: Server<'_>, mode: &str, [alice, bob, carol]: [Person; 3]) {
    let driver = ChromeDriver::start().await;
    let shots = Rc::new(Shots::new(mode));
    let private = conversation_id(alice.id, bob.id);
    let private_item = format!(r#"#conversations li.conversation[data-conversation="{private}"]"#);

    // a. A wrong password: an error under the form, no app, no token kept.
    let alice_page = Page::open(&driver, "alice", &server.app_url(&alice), shots.clone()).await;
    alice_page.submit_sign_in("alice", "not the password").await;
    let error = alice_page
        .wait("an error in #login-error", UI_WAIT, async || {
            let text = alice_page.text("#login-error").await?;
            if text.is_empty() { Err("#login-error is empty".to_owned()) } else { Ok(text) }
        })
        .await;
    assert_eq!(error, "Wrong name or password");
    assert!(!alice_page.displayed("#app").await.unwrap(), "the app is shown after a wrong password");
    assert!(alice_page.displayed("#login-form").await.unwrap(), "the sign-in form is gone after a wrong password");
    assert_eq!(alice_page.stored_token().await, None, "a token is kept after a wrong password");
    shots.take(&alice_page, "alice-wrong-password").await;

    // b. alice and bob sign in; alice starts a chat with bob by name and
    // sends; bob's page shows it, timed from alice's click.
    alice_page.sign_in("alice").await;
    server.connected(&alice).await;
    assert!(alice_page.stored_token().await.is_some(), "no token kept after signing in");
    let mut bob_page = server.signed_in(&driver, &bob, &shots).await;
    shots.take(&alice_page, "alice-signed-in").await;
    shots.take(&bob_page, "bob-signed-in").await;

    alice_page.fill("#new-chat-name", "bob").await;
    alice_page.click("#new-chat-submit").await;
    alice_page.wait_text("#conversation-title", "bob").await;
    let first = "hello bob, this is alice";
    alice_page.fill("#compose-input", first).await;
    let clicked = Instant::now();
    alice_page.click("#compose-send").await;
    let last_in_bobs_list = format!("{private_item} .conv-last");
    bob_page.wait_text(&last_in_bobs_list, first).await;
    let latency = clicked.elapsed();
    println!("{mode}: alice's click on Send to the message on bob's page: {} ms", latency.as_millis());
    assert!(
        latency <= DELIVERY_LIMIT,
        "{mode}: bob's page showed alice's message {latency:?} after her click (limit {DELIVERY_LIMIT:?})"
    );
    bob_page.wait_text(&format!("{private_item} .conv-name"), "alice").await;
    bob_page.wait_text(&format!("{private_item} .conv-unread"), "1").await;
    shots.take(&bob_page, "bob-list-shows-the-message").await;
    // Not read yet: bob has not opened it.
    let sent = strings(["sent"]);
    alice_page.wait("alice's message sent", UI_WAIT, async || expect(alice_page.statuses().await?, &sent)).await;
    shots.take(&alice_page, "alice-message-sent").await;

    // c. bob opens the conversation: the message is there, from alice, and
    // alice's page shows it read.
    bob_page.open_conversation(&private, "alice").await;
    let from_alice = pairs([("alice", first)]);
    bob_page.wait("alice's message", UI_WAIT, async || expect(bob_page.senders_and_bodies().await?, &from_alice)).await;
    bob_page
        .wait("no unread left", UI_WAIT, async || {
            hidden(bob_page.attr(&format!("{private_item} .conv-unread"), "hidden").await?)
        })
        .await;
    shots.take(&bob_page, "bob-opened-the-conversation").await;
    let read = strings(["read"]);
    alice_page.wait("alice's message read", UI_WAIT, async || expect(alice_page.statuses().await?, &read)).await;
    shots.take(&alice_page, "alice-sees-read").await;

    // d. bob's browser closes; alice sends 50 numbered messages; bob comes
    // back in a new browser: 50 unread, and all 50 in order.
    bob_page.close().await;
    let numbered: Vec<String> = (1..=OFFLINE_MESSAGES).map(|i| format!("numbered {i:02}")).collect();
    // Typed as fast as WebDriver types; the app's outbox sends them in order.
    for text in &numbered {
        alice_page.type_and_enter(text).await;
    }
    let all_sent: Vec<&str> = std::iter::once("read").chain(numbered.iter().map(|_| "sent")).collect();
    alice_page
        .wait("the 50 messages sent", UI_WAIT, async || {
            let statuses = alice_page.statuses().await?;
            if statuses == all_sent { Ok(()) } else { Err(summary("statuses", &statuses)) }
        })
        .await;
    let alice_bodies = alice_page.bodies().await.unwrap();
    assert_eq!(alice_bodies[1..], numbered[..], "alice's page shows her messages out of order");
    shots.take(&alice_page, "alice-sent-50-while-bob-is-away").await;

    bob_page = server.signed_in(&driver, &bob, &shots).await;
    bob_page.wait_text(&format!("{private_item} .conv-unread"), &OFFLINE_MESSAGES.to_string()).await;
    assert_eq!(bob_page.attr(&format!("{private_item} .conv-unread"), "hidden").await.unwrap(), None);
    bob_page.wait_text(&last_in_bobs_list, &numbered[OFFLINE_MESSAGES - 1]).await;
    shots.take(&bob_page, "bob-back-50-unread").await;
    bob_page.open_conversation(&private, "alice").await;
    bob_page
        .wait("the 50 messages in order", UI_WAIT, async || {
            let bodies = bob_page.bodies().await?;
            // The latest page is the 50; the first message comes on scrolling up.
            let shown: Vec<&String> = bodies.iter().filter(|body| *body != first).collect();
            if shown == numbered.iter().collect::<Vec<_>>() { Ok(()) } else { Err(summary("bodies", &bodies)) }
        })
        .await;
    shots.take(&bob_page, "bob-sees-the-50").await;
    alice_page
        .wait("alice's last message read", UI_WAIT, async || {
            let statuses = alice_page.statuses().await?;
            if statuses.last().is_some_and(|s| s == "read") { Ok(()) } else { Err(summary("statuses", &statuses)) }
        })
        .await;
    // A page opened afterwards (alice on another device) learns how far bob
    // read from the conversation list, not from a receipt it never saw.
    let alice_again = server.signed_in(&driver, &alice, &shots).await;
    alice_again.open_conversation(&private, "bob").await;
    alice_again
        .wait("bob's read position on a new page", UI_WAIT, async || {
            let statuses = alice_again.statuses().await?;
            if !statuses.is_empty() && statuses.iter().all(|s| s == "read") {
                Ok(())
            } else {
                Err(summary("statuses", &statuses))
            }
        })
        .await;
    shots.take(&alice_again, "alice-new-page-sees-read").await;
    alice_again.close().await;

    // e. A group of three, made by names in the New group form; each sends
    // one message; each page shows the three with their senders.
    let carol_page = server.signed_in(&driver, &carol, &shots).await;
    alice_page.fill("#new-group-name", "trip").await;
    alice_page.fill("#new-group-members", "bob, carol").await;
    alice_page.click("#new-group-submit").await;
    alice_page.wait_text("#conversation-title", "trip").await;
    let group = alice_page
        .wait("the new group in alice's list", UI_WAIT, async || {
            let conversation = alice_page.attr("#conversations li.conversation.active", "data-conversation").await?;
            match conversation {
                Some(id) if id.starts_with("g:") => Ok(id),
                other => Err(format!("the open conversation is {other:?}")),
            }
        })
        .await;
    let lines = [("alice", "alice says hi"), ("bob", "bob says hi"), ("carol", "carol says hi")];
    alice_page.send(lines[0].1).await;
    bob_page.open_conversation(&group, "trip").await;
    bob_page.send(lines[1].1).await;
    carol_page.open_conversation(&group, "trip").await;
    carol_page.send(lines[2].1).await;
    let all_three = pairs(lines);
    for page in [&alice_page, &bob_page, &carol_page] {
        page.wait("the group's three messages", UI_WAIT, async || expect(page.senders_and_bodies().await?, &all_three))
            .await;
        shots.take(page, &format!("{}-sees-the-group", page.who)).await;
    }
    alice_page.click("#members-toggle").await;
    let mut expected_members = vec![
        (alice.id.to_string(), "alice (you)".to_owned(), "owner".to_owned()),
        (bob.id.to_string(), "bob".to_owned(), "member".to_owned()),
        (carol.id.to_string(), "carol".to_owned(), "member".to_owned()),
    ];
    expected_members.sort();
    alice_page
        .wait("the group's members", UI_WAIT, async || {
            let items = alice_page
                .client
                .find_all(Locator::Css("#group-members li.member"))
                .await
                .map_err(|e| e.to_string())?;
            let mut members = Vec::new();
            for item in items {
                let user = item.attr("data-user").await.map_err(|e| e.to_string())?.unwrap_or_default();
                let name = content(&item.find(Locator::Css(".member-name")).await.map_err(|e| e.to_string())?).await?;
                let role = content(&item.find(Locator::Css(".member-role")).await.map_err(|e| e.to_string())?).await?;
                members.push((user, name, role));
            }
            members.sort();
            if members == expected_members { Ok(()) } else { Err(format!("{members:?}")) }
        })
        .await;
    shots.take(&alice_page, "alice-group-members").await;

    // f. A message that is HTML is shown as its text, and nothing of it runs.
    let html = "<img src=x onerror=alert(1)>";
    alice_page.open_conversation(&private, "bob").await;
    bob_page.open_conversation(&private, "alice").await;
    alice_page.send(html).await;
    bob_page
        .wait("the HTML message as text", UI_WAIT, async || {
            let bodies = bob_page.bodies().await?;
            if bodies.last().is_some_and(|body| body == html) { Ok(()) } else { Err(summary("bodies", &bodies)) }
        })
        .await;
    for page in [&alice_page, &bob_page] {
        let images = page.client.find_all(Locator::Css("#messages img")).await.unwrap();
        assert!(images.is_empty(), "{}'s page made {} img element(s) of a message", page.who, images.len());
        match page.client.get_alert_text().await {
            Err(error) if error.is_no_such_alert() => {}
            other => panic!("{}'s page: an alert is open: {other:?}", page.who),
        }
    }
    shots.take(&bob_page, "bob-sees-html-as-text").await;

    // g. At phone width the page is one column: the open conversation with
    // a Back button, and Back shows the list; the list works by keyboard
    // (Enter on a focused conversation opens it).
    bob_page.client.set_window_size(390, 844).await.expect("a phone-sized window");
    let shown = async |css: &str| if bob_page.displayed(css).await? { Ok(()) } else { Err(format!("{css} is hidden")) };
    let gone = async |css: &str| if bob_page.displayed(css).await? { Err(format!("{css} is shown")) } else { Ok(()) };
    bob_page
        .wait("the conversation alone, with Back, and the newest message in view", UI_WAIT, async || {
            shown("#back").await?;
            shown("#compose-input").await?;
            gone("#conversations").await?;
            let rect = async |css: &str| bob_page.find(css).await?.rectangle().await.map_err(|e| e.to_string());
            let (_, view_top, _, view_height) = rect("#messages").await?;
            let (_, top, _, height) = rect("#messages li.message:last-child").await?;
            if top >= view_top && top + height <= view_top + view_height + 1.0 {
                Ok(())
            } else {
                Err(format!(
                    "the newest message is at {top}..{} of the view's {view_top}..{}",
                    top + height,
                    view_top + view_height
                ))
            }
        })
        .await;
    shots.take(&bob_page, "bob-phone-width-conversation").await;
    bob_page.click("#back").await;
    bob_page
        .wait("the list alone", UI_WAIT, async || {
            shown("#conversations").await?;
            gone("#compose-input").await
        })
        .await;
    shots.take(&bob_page, "bob-phone-width-list").await;
    let item = bob_page.element(&private_item).await;
    item.send_keys(&char::from(Key::Enter).to_string()).await.expect("Enter on the conversation");
    bob_page.wait_text("#conversation-title", "alice").await;
    bob_page.wait("the conversation opened by keyboard", UI_WAIT, async || shown("#compose-input").await).await;
    shots.take(&bob_page, "bob-phone-width-opened-by-keyboard").await;

    for page in [alice_page, bob_page, carol_page] {
        page.close().await;
    }
    println!("{mode}: {} screenshots in {}", shots.taken.get(), shots.dir.display());
}

/// `Ok` when `seen` is `expected`, else what was seen.
fn expect<T: PartialEq + std::fmt::Debug>(seen: T, expected: &T) -> Result<(), String> {
    if &seen == expected { Ok(()) } else { Err(format!("{seen:?}")) }
}

fn strings<const N: usize>(texts: [&str; N]) -> Vec<String> {
    texts.map(str::to_owned).into()
}

fn pairs<const N: usize>(pairs: [(&str, &str); N]) -> Vec<(String, String)> {
    pairs.map(|(a, b)| (a.to_owned(), b.to_owned())).into()
}

/// `Ok` when an element's `hidden` attribute is set.
fn hidden(attribute: Option<String>) -> Result<(), String> {
    attribute.map(|_| ()).ok_or_else(|| "not hidden".to_owned())
}

/// A long list, short: its length and its ends.
fn summary(what: &str, items: &[String]) -> String {
    match items {
        [] => format!("no {what}"),
        [only] => format!("{what}: [{only:?}]"),
        [first, .., last] => format!("{} {what}: {first:?} … {last:?}", items.len()),
    }
}

/// Three users with the test's password, through the node's directory.
async fn embedded_people(node: &Node) -> [Person; 3] {
    let mut people = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let (id, _) = node.create_user(name).await;
        node.user_admin().await.set_password(id, PASSWORD).await;
        people.push(Person { name, id, gateway: 0 });
    }
    people.try_into().unwrap_or_else(|_| unreachable!())
}

#[tokio::test]
async fn embedded_people_chat_in_the_browser_app() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let people = embedded_people(&node).await;
    people_chat_in_the_browser(Server::Embedded(&node), "embedded", people).await;
}

#[tokio::test]
async fn production_people_chat_in_the_browser_app_across_gateways() {
    let cluster = ClusterBuilder::new().start().await;
    let mut people = Vec::new();
    for (name, gateway) in [("alice", 0), ("bob", 1), ("carol", 0)] {
        let user = cluster.create_user(name).await;
        cluster.user_admin().await.set_password(user.id, PASSWORD).await;
        people.push(Person { name, id: user.id, gateway });
    }
    let people = people.try_into().unwrap_or_else(|_| unreachable!());
    people_chat_in_the_browser(Server::Production(&cluster), "production", people).await;
}
