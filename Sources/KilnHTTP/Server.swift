import CShims
import Dispatch
import Foundation
import Synchronization

/// Everything the engine lets you tune. Times are in seconds.
public struct ServerConfiguration: Sendable {
    public var host = "127.0.0.1"
    /// 0 picks a free port (read `HTTPServer.port` after `start`).
    public var port = 8080
    public var eventLoops = max(1, ProcessInfo.processInfo.activeProcessorCount)
    public var parserLimits = ParserLimits()
    /// Default request body limit; routes may override it.
    public var maxBodySize = 10 * 1024 * 1024
    public var headerTimeout = 10
    /// Longest pause between two pieces of a request body…
    public var bodyTimeout = 30
    /// …and the longest a whole (collected) body may take: a client trickling a byte now and then
    /// cannot hold a connection and a handler slot open.
    public var bodyTotalTimeout = 120
    public var idleTimeout = 60
    public var maxConnections = 16_384
    /// Stop reading a connection (and make stream writers wait) above this many unsent bytes.
    public var writeHighWater = 1 << 20
    public var writeLowWater = 256 * 1024
    /// How long in-flight requests may take to finish on shutdown.
    public var shutdownGrace: Double = 10
    public var backlog: Int32 = 1024
    public var tlsCertificatePath: String?
    public var tlsKeyPath: String?

    public init() {}
}

/// The HTTP/1.1 server: a listener shared by one epoll loop per core.
public final class HTTPServer: @unchecked Sendable {
    public let configuration: ServerConfiguration
    public let responder: RouterResponder
    public let stats = ServerStats()
    let tlsContext: TLSContext?
    private var loops: [EventLoop] = []
    private var listenFd: Int32 = -1
    private let state = Mutex<(port: Int, started: Bool, stopped: Bool)>((0, false, false))

    public init(configuration: ServerConfiguration, responder: RouterResponder) throws {
        self.configuration = configuration
        self.responder = responder
        if let cert = configuration.tlsCertificatePath, let key = configuration.tlsKeyPath {
            tlsContext = try TLSContext(certificateChainPath: cert, privateKeyPath: key)
        } else if configuration.tlsCertificatePath != nil || configuration.tlsKeyPath != nil {
            throw HTTPServerError.tls("both --tls-cert and --tls-key are needed")
        } else {
            tlsContext = nil
        }
    }

    /// The bound port (after `start`).
    public var port: Int { state.withLock { $0.port } }
    public var isTLS: Bool { tlsContext != nil }

    /// Binds, listens and starts the loops; returns once the server accepts connections.
    public func start() throws {
        kiln_ignore_sigpipe()
        _ = kiln_raise_nofile()
        var bound: Int32 = 0
        let fd = kiln_listen(configuration.host, Int32(configuration.port), configuration.backlog, &bound)
        guard fd >= 0 else { throw HTTPServerError.bind(configuration.host, configuration.port, -fd) }
        listenFd = fd
        state.withLock {
            $0.port = Int(bound)
            $0.started = true
        }
        for i in 0..<configuration.eventLoops {
            let loop = try EventLoop(index: i, server: self)
            loop.attachListener(fd)
            loops.append(loop)
        }
        for loop in loops { loop.start() }
    }

    /// Graceful stop: no new connections; in-flight requests get `shutdownGrace` seconds; streams
    /// end and WebSockets close with 1001; then the loops stop.
    /// Whether `shutdown` has begun: handlers of long requests can end early.
    public var isShuttingDown: Bool { state.withLock { $0.stopped } }

    /// The first step of a graceful stop: no new connections or requests (idle keep-alive connections
    /// close, busy ones close after their response), while streams and WebSockets go on, so their
    /// producers can still send their last events. `shutdown` ends the rest.
    public func stopAccepting() {
        let started = state.withLock { !$0.stopped }
        guard started else { return }
        for loop in loops { loop.execute { loop.beginDrain(endStreams: false) } }
    }

    public func shutdown() async {
        let already = state.withLock { s -> Bool in
            let a = s.stopped
            s.stopped = true
            return a
        }
        if already || loops.isEmpty { return }
        for loop in loops { loop.execute { loop.beginDrain() } }
        let deadline = monotonicNanos() + UInt64(configuration.shutdownGrace * 1e9)
        while stats.openConnections.load(ordering: .relaxed) > 0 && monotonicNanos() < deadline {
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
        for loop in loops { loop.stop() }
        while !loops.allSatisfy({ $0.finished.withLock { $0 } }) { try? await Task.sleep(nanoseconds: 5_000_000) }
        if listenFd >= 0 {
            close(listenFd)
            listenFd = -1
        }
    }

    /// Starts, then waits for SIGTERM or SIGINT and shuts down gracefully.
    public func runUntilSignal(onStop: (@Sendable () -> Void)? = nil) async throws {
        if !state.withLock({ $0.started }) { try start() }
        await Signals.wait([SIGTERM, SIGINT])
        onStop?()
        await shutdown()
    }
}

/// Waits for one of a set of signals without a signal handler running Swift code.
public enum Signals {
    /// Holds the dispatch sources for the life of the process (they stop when released).
    final class Holder: @unchecked Sendable {
        var sources: [any DispatchSourceSignal] = []
        var continuation: CheckedContinuation<Void, Never>?
        let lock = NSLock()
    }

    public static func wait(_ signals: [Int32]) async {
        let holder = Holder()
        let queue = DispatchQueue(label: "kiln.signals")
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            holder.lock.lock()
            holder.continuation = c
            for sig in signals {
                signal(sig, SIG_IGN)
                let src = DispatchSource.makeSignalSource(signal: sig, queue: queue)
                src.setEventHandler {
                    holder.lock.lock()
                    let c = holder.continuation
                    holder.continuation = nil
                    holder.lock.unlock()
                    c?.resume()
                }
                src.resume()
                holder.sources.append(src)
            }
            holder.lock.unlock()
        }
        holder.lock.withLock { for s in holder.sources { s.cancel() } }
    }
}
