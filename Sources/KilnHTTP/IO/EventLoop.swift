import CShims
import Foundation
import Synchronization

/// One thread, one epoll set. Connections live on the loop that accepted them and are touched
/// only from its thread; other threads hand work over with `execute`, which wakes the loop
/// through an eventfd only when it is asleep.
final class EventLoop: @unchecked Sendable {
    struct Inbox {
        var jobs: [@Sendable () -> Void] = []
        var sleeping = false
    }

    let index: Int
    let epfd: Int32
    let wakeFd: Int32
    private let inbox = Mutex(Inbox())
    unowned let server: HTTPServer

    // Loop-thread state.
    var connections: [Connection?] = []
    var connectionCount = 0
    var listenFd: Int32 = -1
    let readBuffer: UnsafeMutableRawBufferPointer
    var dateLine: [UInt8] = []
    private var dateSecond = -1
    private var nextSweep: UInt64 = 0
    private var running = true
    var draining = false
    private(set) var thread: Thread?
    let finished = Mutex(false)

    static let wakeToken: UInt64 = UInt64.max
    static let listenToken: UInt64 = UInt64.max - 1

    init(index: Int, server: HTTPServer) throws {
        self.index = index
        self.server = server
        epfd = kiln_epoll_create()
        wakeFd = kiln_eventfd()
        guard epfd >= 0, wakeFd >= 0 else { throw HTTPServerError.system("epoll/eventfd", kiln_errno()) }
        _ = kiln_epoll_add(epfd, wakeFd, KILN_EPOLLIN, EventLoop.wakeToken)
        readBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
        refreshDate()
    }

    deinit {
        readBuffer.deallocate()
        close(epfd)
        close(wakeFd)
    }

    /// Runs `job` on the loop thread (thread-safe).
    func execute(_ job: @escaping @Sendable () -> Void) {
        let wake = inbox.withLock { box -> Bool in
            box.jobs.append(job)
            if box.sleeping {
                box.sleeping = false
                return true
            }
            return false
        }
        if wake { _ = kiln_eventfd_signal(wakeFd) }
    }

    func attachListener(_ fd: Int32) {
        listenFd = fd
        _ = kiln_epoll_add(epfd, fd, KILN_EPOLLIN | KILN_EPOLLEXCLUSIVE, EventLoop.listenToken)
    }

    func start() {
        let t = Thread { [self] in self.run() }
        t.name = "kiln-loop-\(index)"
        t.stackSize = 1 << 20
        thread = t
        t.start()
    }

    private func refreshDate() {
        var now = time_t()
        time(&now)
        let s = Int(now)
        if s != dateSecond {
            dateSecond = s
            dateLine = Array("Date: \(HTTPDate.format(epochSeconds: s))\r\n".utf8)
        }
    }

    private func run() {
        var events = [UInt32](repeating: 0, count: 256)
        var datas = [UInt64](repeating: 0, count: 256)
        while running {
            let hasJobs = inbox.withLock { box -> Bool in
                if box.jobs.isEmpty {
                    box.sleeping = true
                    return false
                }
                return true
            }
            let n = events.withUnsafeMutableBufferPointer { ev in
                datas.withUnsafeMutableBufferPointer { da in
                    kiln_epoll_wait(epfd, ev.baseAddress, da.baseAddress, 256, hasJobs ? 0 : 1000)
                }
            }
            inbox.withLock { $0.sleeping = false }
            refreshDate()
            if n > 0 {
                for i in 0..<Int(n) {
                    let token = datas[i]
                    if token == EventLoop.wakeToken {
                        _ = kiln_eventfd_drain(wakeFd)
                        continue
                    }
                    if token == EventLoop.listenToken {
                        acceptConnections()
                        continue
                    }
                    let fd = Int(token)
                    guard fd < connections.count, let c = connections[fd] else { continue }
                    let e = events[i]
                    if e & (KILN_EPOLLERR | KILN_EPOLLHUP) != 0 {
                        c.onHangup()
                        continue
                    }
                    if e & KILN_EPOLLOUT != 0 { c.onWritable() }
                    if e & (KILN_EPOLLIN | KILN_EPOLLRDHUP) != 0 { c.onReadable() }
                }
            }
            runJobs()
            let now = monotonicNanos()
            if now >= nextSweep {
                nextSweep = now + 1_000_000_000
                sweep(now: now)
            }
        }
        // Loop stopped: close whatever is left.
        for c in connections { c?.forceClose() }
        finished.withLock { $0 = true }
    }

    private func runJobs() {
        while true {
            let jobs = inbox.withLock { box -> [@Sendable () -> Void] in
                let j = box.jobs
                box.jobs.removeAll(keepingCapacity: true)
                return j
            }
            if jobs.isEmpty { return }
            for job in jobs { job() }
        }
    }

    private func acceptConnections() {
        guard listenFd >= 0 else { return }
        var addr = [CChar](repeating: 0, count: 64)
        for _ in 0..<64 {
            let fd = addr.withUnsafeMutableBufferPointer { kiln_accept(listenFd, $0.baseAddress, 64) }
            if fd < 0 {
                if -fd == EMFILE || -fd == ENFILE { ServerLog.warn("accept: out of file descriptors") }
                return
            }
            let remote = String(decoding: addr.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            server.stats.acceptedConnections.add(1, ordering: .relaxed)
            let open = server.stats.openConnections.add(1, ordering: .relaxed).newValue
            if open > server.configuration.maxConnections || draining {
                server.stats.openConnections.subtract(1, ordering: .relaxed)
                server.stats.rejectedConnections.add(1, ordering: .relaxed)
                let msg = Array(
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
                        .utf8)
                _ = msg.withUnsafeBytes { kiln_send(fd, $0.baseAddress, $0.count) }
                close(fd)
                continue
            }
            _ = kiln_set_nodelay(fd)
            let conn = Connection(fd: fd, loop: self, remoteAddress: remote, tls: server.tlsContext)
            let i = Int(fd)
            if i >= connections.count {
                connections.append(contentsOf: repeatElement(nil, count: max(i + 1 - connections.count, 256)))
            }
            connections[i] = conn
            connectionCount += 1
            _ = kiln_epoll_add(epfd, fd, KILN_EPOLLIN | KILN_EPOLLOUT | KILN_EPOLLRDHUP | KILN_EPOLLET, UInt64(fd))
        }
    }

    /// Called by a connection when it has closed its fd.
    func remove(_ fd: Int32) {
        let i = Int(fd)
        if i < connections.count, connections[i] != nil {
            connections[i] = nil
            connectionCount -= 1
            server.stats.openConnections.subtract(1, ordering: .relaxed)
        }
    }

    private func sweep(now: UInt64) {
        for c in connections { c?.checkTimeouts(now: now) }
    }

    /// Graceful stop, phase 1 (on the loop): stop accepting, close idle connections, ask the rest to
    /// finish; with `endStreams`, streams are ended and WebSockets closed too.
    func beginDrain(endStreams: Bool = true) {
        draining = true
        if listenFd >= 0 { _ = kiln_epoll_del(epfd, listenFd) }
        for c in connections { c?.drain(endStreams: endStreams) }
    }

    func stop() { execute { [self] in self.running = false } }
}

public enum HTTPServerError: Error, CustomStringConvertible {
    case system(String, Int32)
    case bind(String, Int, Int32)
    case tls(String)
    public var description: String {
        switch self {
        case .system(let what, let e): "\(what) failed: \(String(cString: strerror(e)))"
        case .bind(let host, let port, let e): "cannot listen on \(host):\(port): \(String(cString: strerror(e)))"
        case .tls(let m): "TLS: \(m)"
        }
    }
}
