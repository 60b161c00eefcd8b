//! Headless Chromium, for tests of the HTML reports: load a page from disk
//! and tell what the browser saw: the DOM after the scripts ran, every
//! console message, and every request the page tried to send anywhere but
//! to a local file.
//!
//! Chromium runs as a [`ManagedProcess`] (signalled by pid, reaped) with
//! the flags of a quiet, sandbox-less headless browser, host names mapped
//! to nowhere (so nothing can leave the machine even if a page asked) and
//! a network log from which the page's own requests are read: requests
//! whose initiator is the page, as opposed to Chromium's own background
//! traffic (component updates and the like, "not an origin").

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::process::{ManagedProcess, ProcessSpec};

/// A page load that takes longer than this is hung.
const LOAD_TIMEOUT_S: u64 = 90;
/// Virtual time the page gets for timers and animation frames before the
/// DOM is dumped.
const VIRTUAL_TIME_BUDGET_MS: u64 = 5_000;

/// Names Chromium goes by on Linux distributions.
const CANDIDATES: [&str; 4] = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

/// What the browser saw.
#[derive(Debug, Clone)]
pub struct PageLoad {
    /// The DOM after the page's scripts ran.
    pub dom: String,
    /// Console messages (log, warnings, errors, uncaught exceptions).
    pub console: Vec<String>,
    /// URLs the page tried to fetch other than `file:`, `data:` and `blob:`.
    pub page_requests: Vec<String>,
}

/// The Chromium executable: `$CHROMIUM`, else the first of the usual names
/// on `PATH`. When there is none, runs the workspace's
/// `scripts/prerequisites` (which installs Debian's `chromium` where it
/// can) and looks again; fails with what to do if that did not help.
pub fn chromium() -> Result<PathBuf> {
    if let Some(found) = find_chromium() {
        return Ok(found);
    }
    // One install at a time: tests that need a browser run in parallel
    // threads, and a second apt-get beside the first fails on its lock.
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _installing = INSTALLING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(found) = find_chromium() {
        return Ok(found);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/prerequisites");
    if script.is_file() {
        let status = Command::new(&script)
            .status()
            .with_context(|| format!("running {}", script.display()))?;
        if !status.success() {
            bail!(
                "Chromium is not installed and {} could not install it ({status}); \
                 install Debian's `chromium` package or set CHROMIUM=/path/to/chrome",
                script.display()
            );
        }
    }
    find_chromium().context(
        "Chromium not found: install Debian's `chromium` package (scripts/prerequisites does) \
         or set CHROMIUM=/path/to/chrome",
    )
}

fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM").map(PathBuf::from) {
        return path.is_file().then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| CANDIDATES.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Loads `page` in headless Chromium; `work` receives the profile, the log
/// and the network log.
pub fn load_page(page: &Path, work: &Path) -> Result<PageLoad> {
    let browser = chromium()?;
    let page = page
        .canonicalize()
        .with_context(|| format!("finding {}", page.display()))?;
    std::fs::create_dir_all(work)?;
    let log = work.join("chromium.log");
    let net_log = work.join("chromium-netlog.json");
    let _ = std::fs::remove_file(&log);
    let spec = ProcessSpec::new("chromium", browser, &log).args([
        "--headless".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--no-first-run".to_owned(),
        "--disable-background-networking".to_owned(),
        "--host-resolver-rules=MAP * ~NOTFOUND".to_owned(),
        format!("--user-data-dir={}", work.join("profile").display()),
        "--enable-logging=stderr".to_owned(),
        "--v=0".to_owned(),
        format!("--log-net-log={}", net_log.display()),
        format!("--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}"),
        "--dump-dom".to_owned(),
        format!("file://{}", page.display()),
    ]);
    let mut process = ManagedProcess::start(spec)?;
    if process
        .wait_exit_blocking(Duration::from_secs(LOAD_TIMEOUT_S))
        .is_none()
    {
        drop(process);
        bail!(
            "Chromium did not finish loading {} within {LOAD_TIMEOUT_S} s",
            page.display()
        );
    }
    let output = std::fs::read_to_string(&log).context("reading Chromium's output")?;
    let dom = dom_of(&output)
        .with_context(|| format!("Chromium printed no DOM; its output:\n{output}"))?;
    let net = std::fs::read_to_string(&net_log).context("reading Chromium's network log")?;
    Ok(PageLoad {
        dom: dom.to_owned(),
        console: console_messages(&output),
        page_requests: page_requests(&net)?,
    })
}

/// The dumped document: from its doctype (or `<html`) to the last `</html>`.
fn dom_of(output: &str) -> Option<&str> {
    let start = output
        .find("<!DOCTYPE html>")
        .or_else(|| output.find("<html"))?;
    let end = output.rfind("</html>")? + "</html>".len();
    (end > start).then(|| &output[start..end])
}

/// Chromium logs each console message as `...:CONSOLE...] "text", source: url (line)`.
fn console_messages(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|line| line.contains(":CONSOLE"))
        .map(|line| {
            line.split_once("] ")
                .map_or(line, |(_, message)| message)
                .to_owned()
        })
        .collect()
}

/// Requests the page itself started (an initiator that is an origin) for
/// anything but local content.
fn page_requests(net_log: &str) -> Result<Vec<String>> {
    let log: serde_json::Value =
        serde_json::from_str(net_log).context("parsing the network log")?;
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
        .as_i64()
        .context("the network log names no URL_REQUEST_START_JOB event")?;
    let mut urls: Vec<String> = log["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|event| event["type"].as_i64() == Some(start_job))
        .filter(|event| event["params"]["initiator"].as_str() != Some("not an origin"))
        .filter_map(|event| event["params"]["url"].as_str())
        .filter(|url| {
            !["file:", "data:", "blob:"]
                .iter()
                .any(|local| url.starts_with(local))
        })
        .map(str::to_owned)
        .collect();
    urls.sort();
    urls.dedup();
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page that asks for a CDN script and an image and throws: what the
    /// report test must catch. Proves the three checks see what they claim.
    #[test]
    fn a_page_that_reaches_out_or_throws_is_caught() {
        let work = tempfile::tempdir().unwrap();
        let page = work.path().join("bad.html");
        std::fs::write(
            &page,
            r#"<!DOCTYPE html><html><body><p id="x">before</p>
<script src="https://cdn.jsdelivr.net/npm/echarts@6/dist/echarts.min.js"></script>
<img src="http://example.com/pixel.png">
<script>document.getElementById('x').textContent = 'after'; undefinedFunction();</script>
</body></html>"#,
        )
        .unwrap();
        let load = load_page(&page, &work.path().join("chromium")).unwrap();
        assert!(load.dom.contains(r#"<p id="x">after</p>"#), "{}", load.dom);
        assert_eq!(
            load.page_requests,
            [
                "http://example.com/pixel.png",
                "https://cdn.jsdelivr.net/npm/echarts@6/dist/echarts.min.js"
            ]
        );
        assert!(
            load.console
                .iter()
                .any(|m| m.contains("undefinedFunction is not defined")),
            "{:?}",
            load.console
        );
    }

    #[test]
    fn a_quiet_page_has_no_requests_and_no_console() {
        let work = tempfile::tempdir().unwrap();
        let page = work.path().join("ok.html");
        std::fs::write(
            &page,
            "<!DOCTYPE html><html><body><script>document.body.dataset.done = 'yes';</script></body></html>",
        )
        .unwrap();
        let load = load_page(&page, &work.path().join("chromium")).unwrap();
        assert!(load.dom.contains(r#"data-done="yes""#), "{}", load.dom);
        assert!(load.page_requests.is_empty(), "{:?}", load.page_requests);
        assert!(load.console.is_empty(), "{:?}", load.console);
    }
}
