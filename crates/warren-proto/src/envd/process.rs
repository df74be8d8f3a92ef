//! Messages of `process.Process` (start, attach to, feed and signal processes).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::json::{base64_bytes, int32, is_default, proto_enum};

proto_enum! {
    /// Signals a client may send.
    Signal {
        /// Not set (rejected by the agent).
        Unspecified = 0 => "SIGNAL_UNSPECIFIED",
        /// SIGTERM.
        Sigterm = 15 => "SIGNAL_SIGTERM",
        /// SIGKILL.
        Sigkill = 9 => "SIGNAL_SIGKILL",
    }
}

/// Terminal size of a PTY.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PtySize {
    /// Columns.
    #[serde(with = "int32", skip_serializing_if = "is_default")]
    pub cols: u32,
    /// Rows.
    #[serde(with = "int32", skip_serializing_if = "is_default")]
    pub rows: u32,
}

/// PTY request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pty {
    /// Terminal size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<PtySize>,
}

/// What to run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessConfig {
    /// Executable (looked up in `PATH`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cmd: String,
    /// Arguments after the executable.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment variables.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub envs: BTreeMap<String, String>,
    /// Working directory (default: the user's home).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// Which process an RPC is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProcessSelector {
    /// By process id.
    Pid(#[serde(with = "int32")] u32),
    /// By the tag given at start.
    Tag(String),
}

/// Input for a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProcessInput {
    /// Bytes for the stdin pipe.
    Stdin(#[serde(with = "base64_bytes")] Bytes),
    /// Bytes typed into the PTY.
    Pty(#[serde(with = "base64_bytes")] Bytes),
}

/// `List` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRequest {}

/// A running process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessInfo {
    /// How it was started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<ProcessConfig>,
    /// Its pid.
    #[serde(with = "int32", skip_serializing_if = "is_default")]
    pub pid: u32,
    /// Its tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// `List` response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ListResponse {
    /// Running processes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ProcessInfo>,
}

/// `Start` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StartRequest {
    /// What to run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessConfig>,
    /// Run inside a PTY of this size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pty: Option<Pty>,
    /// A name to find the process by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Keep a stdin pipe open for `SendInput`/`StreamInput`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin: Option<bool>,
}

/// `start` event: the process runs with this pid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StartEvent {
    /// The pid.
    #[serde(with = "int32", skip_serializing_if = "is_default")]
    pub pid: u32,
}

/// `data` event: a chunk of output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DataEvent {
    /// From stdout.
    Stdout(#[serde(with = "base64_bytes")] Bytes),
    /// From stderr.
    Stderr(#[serde(with = "base64_bytes")] Bytes),
    /// From the PTY.
    Pty(#[serde(with = "base64_bytes")] Bytes),
}

/// `end` event: the process is gone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EndEvent {
    /// Exit code, -1 when killed by a signal.
    #[serde(with = "int32", skip_serializing_if = "is_default")]
    pub exit_code: i32,
    /// Whether it exited normally (not by a signal).
    #[serde(skip_serializing_if = "is_default")]
    pub exited: bool,
    /// Text such as `exit status 3` or `signal: killed`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// Why the process could not run or was lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Empty keepalive message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepAlive {}

/// One event of a process output stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProcessEvent {
    /// Always the first event.
    Start(StartEvent),
    /// Output.
    Data(DataEvent),
    /// The last event.
    End(EndEvent),
    /// Sent on idle streams.
    Keepalive(KeepAlive),
}

/// `Start` stream message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartResponse {
    /// The event.
    pub event: ProcessEvent,
}

/// `Connect` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectRequest {
    /// Which process to attach to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessSelector>,
}

/// `Connect` stream message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectResponse {
    /// The event.
    pub event: ProcessEvent,
}

/// `Update` request (PTY resize).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UpdateRequest {
    /// Which process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessSelector>,
    /// New PTY settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pty: Option<Pty>,
}

/// `SendInput` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SendInputRequest {
    /// Which process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessSelector>,
    /// The input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<ProcessInput>,
}

/// First message of `StreamInput`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamInputStart {
    /// Which process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessSelector>,
}

/// Data message of `StreamInput`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamInputData {
    /// The input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<ProcessInput>,
}

/// One message of the `StreamInput` client stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StreamInputRequest {
    /// Selects the process; first.
    Start(StreamInputStart),
    /// A chunk of input.
    Data(StreamInputData),
    /// Ignored.
    Keepalive(KeepAlive),
}

/// `SendSignal` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SendSignalRequest {
    /// Which process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessSelector>,
    /// The signal.
    #[serde(skip_serializing_if = "is_default")]
    pub signal: Signal,
}

/// `CloseStdin` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CloseStdinRequest {
    /// Which process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessSelector>,
}

/// Empty response of `Update`, `SendInput`, `StreamInput`, `SendSignal`, `CloseStdin`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_request_as_sent_by_the_sdk() {
        let json = r#"{"process":{"cmd":"/bin/bash","args":["-l","-c","echo hi"]},
            "stdin":false,"unknownField":1}"#;
        let req: StartRequest = serde_json::from_str(json).unwrap();
        let p = req.process.as_ref().unwrap();
        assert_eq!(p.cmd, "/bin/bash");
        assert_eq!(p.args, ["-l", "-c", "echo hi"]);
        assert_eq!(req.stdin, Some(false));
        assert!(req.pty.is_none());
        let out = serde_json::to_string(&req).unwrap();
        assert_eq!(
            out,
            r#"{"process":{"cmd":"/bin/bash","args":["-l","-c","echo hi"]},"stdin":false}"#
        );
    }

    #[test]
    fn events_match_the_wire_examples() {
        let cases = [
            (
                ProcessEvent::Start(StartEvent { pid: 1002 }),
                r#"{"event":{"start":{"pid":1002}}}"#,
            ),
            (
                ProcessEvent::Keepalive(KeepAlive {}),
                r#"{"event":{"keepalive":{}}}"#,
            ),
            (
                ProcessEvent::Data(DataEvent::Stdout(Bytes::from_static(b"hi\n"))),
                r#"{"event":{"data":{"stdout":"aGkK"}}}"#,
            ),
            (
                ProcessEvent::End(EndEvent {
                    exit_code: 0,
                    exited: true,
                    status: "exit status 0".into(),
                    error: None,
                }),
                r#"{"event":{"end":{"exited":true,"status":"exit status 0"}}}"#,
            ),
            (
                ProcessEvent::End(EndEvent {
                    exit_code: 3,
                    ..Default::default()
                }),
                r#"{"event":{"end":{"exitCode":3}}}"#,
            ),
        ];
        for (event, json) in cases {
            let msg = StartResponse { event };
            assert_eq!(serde_json::to_string(&msg).unwrap(), json);
            assert_eq!(serde_json::from_str::<StartResponse>(json).unwrap(), msg);
        }
    }

    #[test]
    fn selectors_inputs_and_signals() {
        let req: SendInputRequest =
            serde_json::from_str(r#"{"process":{"pid":"7"},"input":{"stdin":"aGk"}}"#).unwrap();
        assert_eq!(req.process, Some(ProcessSelector::Pid(7)));
        assert_eq!(
            req.input,
            Some(ProcessInput::Stdin(Bytes::from_static(b"hi")))
        );
        let req: SendSignalRequest =
            serde_json::from_str(r#"{"process":{"tag":"t"},"signal":"SIGNAL_SIGKILL"}"#).unwrap();
        assert_eq!(req.signal, Signal::Sigkill);
        assert_eq!(req.process, Some(ProcessSelector::Tag("t".into())));
        let req: SendSignalRequest = serde_json::from_str(r#"{"signal":15}"#).unwrap();
        assert_eq!(req.signal, Signal::Sigterm);
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"signal":"SIGNAL_SIGTERM"}"#
        );
        let msgs = [
            r#"{"start":{"process":{"pid":3}}}"#,
            r#"{"data":{"input":{"pty":"AAE="}}}"#,
            r#"{"keepalive":{}}"#,
        ];
        for m in msgs {
            let parsed: StreamInputRequest = serde_json::from_str(m).unwrap();
            assert_eq!(serde_json::to_string(&parsed).unwrap(), m);
        }
        assert!(serde_json::from_str::<ProcessSelector>("{}").is_err());
    }

    #[test]
    fn list_response_shape() {
        let resp = ListResponse {
            processes: vec![ProcessInfo {
                config: Some(ProcessConfig {
                    cmd: "sleep".into(),
                    args: vec!["5".into()],
                    envs: BTreeMap::from([("A".into(), "b".into())]),
                    cwd: None,
                }),
                pid: 9,
                tag: Some("x".into()),
            }],
        };
        let json = serde_json::to_string(&resp).unwrap();
        let expected = concat!(
            r#"{"processes":[{"config":{"cmd":"sleep","args":["5"],"envs":{"A":"b"}},"#,
            r#""pid":9,"tag":"x"}]}"#
        );
        assert_eq!(json, expected);
        assert_eq!(
            serde_json::to_string(&ListResponse::default()).unwrap(),
            "{}"
        );
    }
}
