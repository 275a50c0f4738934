//! OTLP/HTTP: `POST /v1/metrics` with a binary protobuf body (gzip allowed). Answers as
//! the OTLP specification says: `200` with an `ExportMetricsServiceResponse`, or an
//! error status with a protobuf `google.rpc.Status` saying what was wrong.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{Rejection, Shared};

const TRANSPORT: &str = "http";
const PATH: &str = "/v1/metrics";
const PROTOBUF: &str = "application/x-protobuf";

/// `google.rpc.Status`, the body of OTLP/HTTP error responses.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// Serves OTLP/HTTP on `listener` in a background task.
pub(super) fn spawn(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: watch::Receiver<bool>,
) {
    let service = move |request: Request<Incoming>| {
        let shared = shared.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(request, &shared).await) }
    };
    tokio::spawn(super::serve::accept_loop(
        TRANSPORT, listener, tls, stop, service,
    ));
}

fn response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(PROTOBUF));
    response
}

/// An error answer: `status` with a `google.rpc.Status` (gRPC `code`) saying `message`.
fn error(status: StatusCode, code: tonic::Code, message: String) -> Response<Full<Bytes>> {
    let body = RpcStatus {
        code: code as i32,
        message,
    }
    .encode_to_vec();
    response(status, body)
}

/// Counts `rejection` and answers it.
fn rejected(shared: &Shared, rejection: Rejection) -> Response<Full<Bytes>> {
    let rejection = shared.rejected(TRANSPORT, rejection);
    answer(&rejection, shared.max_request_bytes)
}

/// The answer to a request refused whole.
fn answer(rejection: &Rejection, max_request_bytes: usize) -> Response<Full<Bytes>> {
    let (status, code) = match rejection {
        Rejection::Unauthenticated => (StatusCode::UNAUTHORIZED, tonic::Code::Unauthenticated),
        Rejection::TooLarge(_) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            tonic::Code::ResourceExhausted,
        ),
        Rejection::Malformed(_) => (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument),
        Rejection::Busy => (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable),
    };
    let mut answer = error(status, code, rejection.message(max_request_bytes));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        answer
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
    }
    answer
}

async fn handle(request: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    if request.uri().path() != PATH {
        return error(
            StatusCode::NOT_FOUND,
            tonic::Code::NotFound,
            format!("only {PATH} is served here (OTLP metrics)"),
        );
    }
    if request.method() != Method::POST {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            tonic::Code::Unimplemented,
            format!("{PATH} takes POST"),
        );
    }
    let headers = request.headers();
    if !shared.authorized(headers.get(AUTHORIZATION).map(|v| v.as_bytes())) {
        return rejected(shared, Rejection::Unauthenticated);
    }
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with(PROTOBUF) {
        return rejected(
            shared,
            Rejection::Malformed(format!(
                "Content-Type is {content_type:?}; send {PROTOBUF} (binary protobuf)"
            )),
        );
    }
    let gzip = match headers.get(CONTENT_ENCODING).map(|v| v.as_bytes()) {
        None | Some(b"identity") => false,
        Some(b"gzip") => true,
        Some(other) => {
            return rejected(
                shared,
                Rejection::Malformed(format!(
                    "Content-Encoding {:?} is not supported; send gzip or none",
                    String::from_utf8_lossy(other)
                )),
            );
        }
    };
    let max = shared.max_request_bytes;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(declared) = declared
        && declared > max as u64
    {
        return rejected(
            shared,
            Rejection::TooLarge(format!("Content-Length is {declared}")),
        );
    }
    let body = match Limited::new(request.into_body(), max).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return rejected(
                shared,
                Rejection::TooLarge(format!("the body passed {max} bytes")),
            );
        }
        Err(e) => {
            return rejected(
                shared,
                Rejection::Malformed(format!("cannot read the body: {e}")),
            );
        }
    };
    let body = if gzip {
        match gunzip(&body, max) {
            Ok(body) => Bytes::from(body),
            Err(rejection) => return rejected(shared, rejection),
        }
    } else {
        body
    };
    let request = match ExportMetricsServiceRequest::decode(body) {
        Ok(request) => request,
        Err(e) => return rejected(shared, Rejection::Malformed(e.to_string())),
    };
    match shared.accept(TRANSPORT, request) {
        Ok(answer) => response(StatusCode::OK, answer.encode_to_vec()),
        // Counted by `accept` already.
        Err(rejection) => answer(&rejection, max),
    }
}

/// `body` gunzipped, refused past `max` bytes.
fn gunzip(body: &[u8], max: usize) -> Result<Vec<u8>, Rejection> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Rejection::Malformed(format!("cannot gunzip the body: {e}")))?;
    if out.len() > max {
        return Err(Rejection::TooLarge(format!(
            "the body passed {max} bytes once gunzipped"
        )));
    }
    Ok(out)
}
