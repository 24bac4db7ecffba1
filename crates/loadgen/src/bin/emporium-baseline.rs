//! The benchmarks' practical ceiling: a minimal actix-web server that answers every GET with the
//! same bytes from memory (a body captured from Emporium, with its content type), on the same
//! runtime and HTTP stack the services use. `scripts/bench.sh` measures Emporium's endpoints as
//! a ratio of this server's throughput in the same run on the same machine.
//!
//! Usage: emporium-baseline <port> <body file> <content type>

use actix_web::{App, HttpResponse, HttpServer, web};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, port, file, content_type] = args.as_slice() else {
        eprintln!("usage: emporium-baseline <port> <body file> <content type>");
        std::process::exit(2);
    };
    let port: u16 = port
        .parse()
        .map_err(|_| std::io::Error::other("the port is not a number"))?;
    let body = web::Bytes::from(std::fs::read(file)?);
    let content_type = content_type.clone();
    HttpServer::new(move || {
        let body = body.clone();
        let content_type = content_type.clone();
        App::new().default_service(web::to(move || {
            let body = body.clone();
            let content_type = content_type.clone();
            async move { HttpResponse::Ok().content_type(content_type).body(body) }
        }))
    })
    .workers(2)
    .bind(("127.0.0.1", port))?
    .run()
    .await
}
