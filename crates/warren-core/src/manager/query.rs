//! Commands that read or adjust a live sandbox: list, get, connect, set timeout, metrics,
//! and the gateway's routing lookups.
//!
//! List pagination: sandboxes are ordered by `(startedAt, sandboxID)`; the cursor
//! (`nextToken`) is the position of the last item returned, `<start micros>_<id>`, and the
//! next page starts strictly after it. A cursor stays valid when sandboxes come and go.

use std::net::SocketAddr;

use chrono::{DateTime, Utc};
use warren_proto::api::{
    Lifecycle, ListedSandbox, OnTimeout, Sandbox, SandboxDetail, SandboxMetric, SandboxState,
};

use super::{
    ConnectError, ListError, Live, MetricsError, RouteError, SandboxManager, SetTimeoutError, now,
    transition,
};
use crate::config::{CLIENT_ID, ENVD_VERSION};
use crate::lifecycle::{Phase, Transition};
use crate::store::SandboxRecord;

/// Page size when the client gives none.
pub const DEFAULT_LIST_LIMIT: usize = 100;
/// Largest accepted page size.
pub const MAX_LIST_LIMIT: usize = 100;

/// Sort order of a list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ListOrder {
    #[default]
    Asc,
    Desc,
}

/// Filter and page of `GET /v2/sandboxes`.
#[derive(Debug, Clone)]
pub struct ListFilter {
    /// All pairs must equal the sandbox's metadata.
    pub metadata: Vec<(String, String)>,
    /// `None` = running and paused.
    pub states: Option<Vec<SandboxState>>,
    pub started_after: Option<DateTime<Utc>>,
    pub template: Option<String>,
    pub order: ListOrder,
    pub limit: usize,
    pub next_token: Option<String>,
}

impl Default for ListFilter {
    fn default() -> Self {
        ListFilter {
            metadata: Vec::new(),
            states: None,
            started_after: None,
            template: None,
            order: ListOrder::Asc,
            limit: DEFAULT_LIST_LIMIT,
            next_token: None,
        }
    }
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub items: Vec<ListedSandbox>,
    /// Cursor of the next page; `None` on the last page.
    pub next_token: Option<String>,
}

/// Where the gateway sends a sandbox's envd traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub sandbox_id: String,
    pub agent: SocketAddr,
}

fn cursor_of(item: &ListedSandbox) -> String {
    format!("{}_{}", item.started_at.timestamp_micros(), item.sandbox_id)
}

fn parse_cursor(token: &str) -> Result<(i64, String), ListError> {
    let (micros, id) = token.split_once('_').ok_or(ListError::InvalidToken)?;
    let micros = micros.parse().map_err(|_| ListError::InvalidToken)?;
    if id.is_empty()
        || !id
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        return Err(ListError::InvalidToken);
    }
    Ok((micros, id.to_owned()))
}

fn listed(live: &Live, state: SandboxState) -> ListedSandbox {
    let r = &live.record;
    ListedSandbox {
        template_id: r.template_id.clone(),
        sandbox_id: r.id.clone(),
        client_id: CLIENT_ID.to_owned(),
        alias: None,
        started_at: r.started_at,
        end_at: r.end_at,
        cpu_count: r.vcpus,
        memory_mb: r.memory_mb,
        disk_size_mb: r.disk_mb,
        state,
        envd_version: ENVD_VERSION.to_owned(),
        metadata: Some(r.metadata.clone()),
    }
}

/// The create/connect answer for a sandbox.
pub(super) fn sandbox_of(record: &SandboxRecord) -> Sandbox {
    Sandbox {
        template_id: record.template_id.clone(),
        sandbox_id: record.id.clone(),
        client_id: CLIENT_ID.to_owned(),
        envd_version: ENVD_VERSION.to_owned(),
        alias: None,
        envd_access_token: Some(record.access_token.clone()),
        traffic_access_token: None,
        domain: None,
    }
}

impl SandboxManager {
    /// Lists visible sandboxes.
    pub fn list(&self, filter: &ListFilter) -> Result<ListPage, ListError> {
        let cursor = filter.next_token.as_deref().map(parse_cursor).transpose()?;
        let mut items: Vec<ListedSandbox> = self
            .live()
            .values()
            .filter_map(|live| {
                let state = live.record.phase.visible_state()?;
                let r = &live.record;
                let wanted = filter.states.as_ref().is_none_or(|s| s.contains(&state))
                    && filter.started_after.is_none_or(|t| r.started_at > t)
                    && filter.template.as_ref().is_none_or(|t| &r.template_id == t)
                    && filter
                        .metadata
                        .iter()
                        .all(|(k, v)| r.metadata.get(k) == Some(v));
                wanted.then(|| listed(live, state))
            })
            .collect();
        let key = |i: &ListedSandbox| (i.started_at.timestamp_micros(), i.sandbox_id.clone());
        items.sort_by_key(key);
        if filter.order == ListOrder::Desc {
            items.reverse();
        }
        if let Some(cursor) = cursor {
            let after = |i: &ListedSandbox| match filter.order {
                ListOrder::Asc => key(i) > cursor,
                ListOrder::Desc => key(i) < cursor,
            };
            items.retain(after);
        }
        let limit = filter.limit.max(1);
        let next_token = (items.len() > limit).then(|| cursor_of(&items[limit - 1]));
        items.truncate(limit);
        Ok(ListPage { items, next_token })
    }

    /// Details of a visible sandbox.
    pub fn get(&self, id: &str) -> Option<SandboxDetail> {
        let table = self.live();
        let live = table.get(id)?;
        let state = live.record.phase.visible_state()?;
        let on_timeout = if live.record.auto_pause {
            OnTimeout::Pause
        } else {
            OnTimeout::Kill
        };
        Some(SandboxDetail {
            listed: listed(live, state),
            envd_access_token: Some(live.record.access_token.clone()),
            allow_internet_access: live.record.allow_internet,
            domain: None,
            lifecycle: Some(Lifecycle {
                auto_resume: live.record.auto_resume,
                on_timeout,
            }),
        })
    }

    /// Connects to a sandbox: a running one gets its timeout extended (never shortened), a
    /// paused one is resumed with a deadline of `timeout` (or the default) from now.
    /// Returns the sandbox and whether it was resumed (201) rather than already running.
    pub async fn connect(
        &self,
        id: &str,
        timeout: Option<i64>,
    ) -> Result<(Sandbox, bool), ConnectError> {
        let extend = timeout
            .map(|t| self.check_timeout(t))
            .transpose()
            .map_err(ConnectError::InvalidTimeout)?;
        self.wait_while_starting(id).await;
        if let Some(record) = self.begin_resume(id)? {
            let timeout = extend.unwrap_or_else(|| {
                chrono::Duration::from_std(self.inner.config.default_timeout)
                    .unwrap_or(chrono::Duration::seconds(300))
            });
            let sandbox = self.resume(record, timeout).await?;
            return Ok((sandbox, true));
        }
        let (sandbox, new_end) = {
            let mut table = self.live();
            let live = table
                .get_mut(id)
                .ok_or_else(|| ConnectError::NotFound(id.to_owned()))?;
            if matches!(live.record.phase, Phase::Starting | Phase::Stopping) {
                return Err(ConnectError::NotFound(id.to_owned()));
            }
            transition(live, Transition::Use).map_err(|source| ConnectError::NotRunning {
                id: id.to_owned(),
                source,
            })?;
            let new_end = extend
                .map(|d| now() + d)
                .filter(|end| *end > live.record.end_at);
            if let Some(end) = new_end {
                live.record.end_at = end;
            }
            (sandbox_of(&live.record), new_end)
        };
        if let Some(end) = new_end {
            self.persist_end(id, end).await?;
        }
        Ok((sandbox, false))
    }

    /// Sets a running sandbox's deadline to `timeout` seconds from now.
    pub async fn set_timeout(&self, id: &str, timeout: i64) -> Result<(), SetTimeoutError> {
        let duration = self
            .check_timeout(timeout)
            .map_err(SetTimeoutError::InvalidTimeout)?;
        let end = now() + duration;
        {
            let mut table = self.live();
            let live =
                visible(&mut table, id).ok_or_else(|| SetTimeoutError::NotFound(id.to_owned()))?;
            transition(live, Transition::Use).map_err(|source| SetTimeoutError::NotRunning {
                id: id.to_owned(),
                source,
            })?;
            live.record.end_at = end;
        }
        self.persist_end(id, end).await?;
        tracing::info!(sandbox_id = %id, end_at = %end, "sandbox timeout set");
        Ok(())
    }

    async fn persist_end(
        &self,
        id: &str,
        end: DateTime<Utc>,
    ) -> Result<(), crate::store::StoreError> {
        let sid = id.to_owned();
        self.inner
            .store
            .call(move |s| s.set_sandbox_end(&sid, end))
            .await?;
        self.inner.deadlines_changed.notify_one();
        Ok(())
    }

    /// Current resource use of a running sandbox, as one sample.
    pub async fn metrics(&self, id: &str) -> Result<Vec<SandboxMetric>, MetricsError> {
        let (addr, token) = {
            let mut table = self.live();
            let live =
                visible(&mut table, id).ok_or_else(|| MetricsError::NotFound(id.to_owned()))?;
            transition(live, Transition::Use).map_err(|source| MetricsError::NotRunning {
                id: id.to_owned(),
                source,
            })?;
            let addr = live
                .agent
                .ok_or_else(|| MetricsError::NotFound(id.to_owned()))?;
            (addr, live.record.access_token.clone())
        };
        let m = self
            .inner
            .agent
            .metrics(addr, &token)
            .await
            .map_err(MetricsError::Agent)?;
        let at = now();
        Ok(vec![SandboxMetric {
            timestamp: at,
            timestamp_unix: at.timestamp(),
            cpu_count: m.cpu_count,
            cpu_used_pct: m.cpu_used_pct,
            mem_used: m.mem_used,
            mem_total: m.mem_total,
            mem_cache: m.mem_cache,
            disk_used: m.disk_used,
            disk_total: m.disk_total,
        }])
    }

    /// The agent address of a running sandbox, for the gateway.
    pub fn route(&self, id: &str) -> Result<Route, RouteError> {
        let mut table = self.live();
        let live = table
            .get_mut(id)
            .ok_or_else(|| RouteError::NotFound(id.to_owned()))?;
        transition(live, Transition::Use).map_err(|source| RouteError::NotRunning {
            id: id.to_owned(),
            source,
        })?;
        let agent = live
            .agent
            .ok_or_else(|| RouteError::NotFound(id.to_owned()))?;
        Ok(Route {
            sandbox_id: id.to_owned(),
            agent,
        })
    }

    /// The first running sandbox whose access token satisfies `matches` (used to find the
    /// target of a pre-signed `/files` URL, which carries a signature but no sandbox id).
    pub fn find_by_token(&self, matches: impl Fn(&str) -> bool) -> Option<Route> {
        self.live().values().find_map(|live| {
            let usable = live.record.phase == Phase::Running && matches(&live.record.access_token);
            live.agent.filter(|_| usable).map(|agent| Route {
                sandbox_id: live.record.id.clone(),
                agent,
            })
        })
    }
}

/// A sandbox that clients may see (not starting, not stopping).
fn visible<'a>(
    table: &'a mut std::collections::HashMap<String, Live>,
    id: &str,
) -> Option<&'a mut Live> {
    table
        .get_mut(id)
        .filter(|l| l.record.phase.visible_state().is_some())
}
