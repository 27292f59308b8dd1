//! A small Chrome DevTools Protocol client for the page's browser tests: it starts headless Chromium on a
//! private profile with a debugging port on 127.0.0.1, drives one page (navigate, evaluate, type, press keys,
//! click with the mouse, capture screenshots) and kills the browser when dropped. Every wait is bounded.

use base64::Engine as _;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// How long any one wait may take.
const WAIT: Duration = Duration::from_secs(60);

pub struct Browser {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

/// Shift, as CDP's `modifiers` bit field names it.
pub const SHIFT: i64 = 8;

impl Browser {
    /// Starts `chromium` headless with its profile in `profile` and attaches to its first page.
    pub fn launch(chromium: &str, profile: &Path) -> Browser {
        let _ = std::fs::remove_dir_all(profile);
        let mut child = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-extensions",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run `{chromium}` ({e}): install Debian's chromium (`cargo xtask test` does)")
            });
        // Chromium prints `DevTools listening on ws://127.0.0.1:PORT/...` on stderr once it is up.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let browser_ws = rx
            .recv_timeout(WAIT)
            .expect("Chromium did not open its debugging port within 60 s");
        let host = browser_ws
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let targets: Value = reqwest::blocking::get(format!("http://{host}/json/list"))
            .and_then(|r| r.json())
            .expect("Chromium's target list");
        let page_ws = targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_string();
        let (ws, _) = tungstenite::connect(page_ws.as_str()).expect("the page's debugging socket");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(WAIT)).unwrap();
        }
        let mut b = Browser {
            child,
            ws,
            next_id: 0,
        };
        b.call("Page.enable", json!({}));
        b.call("Runtime.enable", json!({}));
        b
    }

    /// Sends one command and returns its `result` (events in between are skipped; an error response panics).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).expect("send to Chromium");
        let t = Instant::now();
        loop {
            assert!(t.elapsed() < WAIT, "no answer to {method} within 60 s");
            let m = self.ws.read().expect("read from Chromium");
            let Message::Text(text) = m else { continue };
            let v: Value = serde_json::from_str(text.as_str()).unwrap();
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `js` in the page (awaiting a promise) and returns its value.
    pub fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("`{js}` threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `js` until it is truthy (at most 60 s) and returns its value; `what` names it on failure, with the
    /// page's error line.
    pub fn wait(&mut self, what: &str, js: &str) -> Value {
        let t = Instant::now();
        loop {
            let v = self.eval(js);
            let truthy = !(v.is_null()
                || v == json!(false)
                || v == json!(0)
                || v == json!("")
                || v.as_array().is_some_and(|a| a.is_empty()));
            if truthy {
                return v;
            }
            if t.elapsed() > WAIT {
                let error = self.eval("document.getElementById('error')?.textContent ?? ''");
                panic!("waited 60 s for {what}; the page's error line: {error}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Loads `url` and waits for the document to finish loading.
    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait(
            "the page to load",
            "document.readyState === 'complete' && location.href !== 'about:blank'",
        );
    }

    /// Focuses the element `selector` and types `text` into it (input events fire as for a user).
    pub fn type_into(&mut self, selector: &str, text: &str) {
        self.eval(&format!(
            "document.querySelector({}).focus()",
            json!(selector)
        ));
        self.call("Input.insertText", json!({"text": text}));
    }

    /// Presses and releases a key (`Enter`, `ArrowDown`, ...) with CDP `modifiers`.
    pub fn press(&mut self, key: &str, code: i64, modifiers: i64) {
        for kind in ["rawKeyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code,
                       "nativeVirtualKeyCode": code, "modifiers": modifiers}),
            );
        }
    }

    /// Clicks the middle of the element the JS expression `element` gives, with the mouse, holding `modifiers`.
    pub fn click(&mut self, element: &str, modifiers: i64) {
        let at = self.eval(&format!(
            "(() => {{ const e = {element}; e.scrollIntoView({{block: 'center'}}); \
             const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        ));
        let (x, y) = (at[0].as_f64().unwrap(), at[1].as_f64().unwrap());
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1,
                       "modifiers": modifiers}),
            );
        }
    }

    /// Writes a PNG of the page laid out `width` pixels wide, from the top, at most `max_height` pixels tall.
    pub fn screenshot(&mut self, width: u32, max_height: u32, path: &Path) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600}),
        );
        let height = self
            .eval("Math.ceil(document.documentElement.scrollHeight)")
            .as_f64()
            .unwrap_or(900.0);
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true,
                   "clip": {"x": 0, "y": 0, "width": width, "height": height.min(max_height as f64), "scale": 1}}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).unwrap();
        self.call("Emulation.clearDeviceMetricsOverride", json!({}));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
