import Foundation
import KilnCore
import KilnCrypto
import KilnHTTP
import Synchronization

/// Runs notebook cells: one kernel per notebook (started through the sandbox in the project, with the
/// bridge on the notebook Python), each run's events on the bus (`nbrun:<id>`), its outputs written
/// back into the file in nbformat's shapes with the execution count.
final class NotebookRunner: Sendable {
    let sandbox: Sandbox
    let bus: EventBus
    let clock: any Clock
    let python: String
    let idleSeconds: Double
    let kernels = Mutex<[String: NotebookKernel]>([:])
    /// Where the notebook Python and its environment live (asked once), shown read-only to kernels.
    let interpreter = Mutex<[String]?>(nil)
    /// Output kept in the file per cell; beyond it the rest is dropped with a note.
    static let maxKeptOutput = 8 << 20

    static let pythonFlag = "--notebook-python"
    static let idleFlag = "--kernel-idle-minutes"
    static let perUserFlag = "--kernels-per-user"
    static let options: [Config.Option] = [
        .text(
            pythonFlag, env: "KILN_NOTEBOOK_PYTHON",
            help: "the Python (with jupyter_client and ipykernel) that drives notebook kernels (default python3)"),
        .int(
            idleFlag, env: "KILN_KERNEL_IDLE_MINUTES", help: "minutes an unused notebook kernel lives (default 60)",
            range: 1...10_080),
        .int(
            perUserFlag, env: "KILN_KERNELS_PER_USER", help: "notebook kernels one account may start (default 4)",
            range: 1...1000),
    ]
    let perUser: Int
    /// Where the instance holding each kernel is recorded (several instances on one database).
    let store: NotebookStore
    let instanceID: String

    init(services: Services, store: NotebookStore) {
        self.store = store
        instanceID = services.instances.id
        sandbox = services.sandbox
        bus = services.bus
        clock = services.clock
        python = services.config.string(Self.pythonFlag) ?? "python3"
        idleSeconds = Double((services.config.int(Self.idleFlag) ?? 60) * 60)
        perUser = services.config.int(Self.perUserFlag) ?? 4
    }

    static func topic(_ runID: String) -> String { "nbrun:\(runID)" }

    /// The notebook's kernel, started when it has none (or a dead one).
    /// The notebook Python's prefix, base prefix and real executable's folder: a virtualenv wherever
    /// it lives (even under /tmp or a home folder) and the Python it was made from.
    func interpreterFolders() async -> [String] {
        if let known = interpreter.withLock({ $0 }) { return known }
        let probe =
            "import os, sys; print(sys.prefix); print(sys.base_prefix); "
            + "print(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))"
        var folders: [String] = []
        if let out = try? await ProcessRunner.run(python, ["-I", "-c", probe], timeout: 20), out.status == 0 {
            folders = Array(
                Set(
                    String(decoding: out.stdout, as: UTF8.self).split(separator: "\n").map(String.init).filter {
                        $0.hasPrefix("/") && $0 != "/"
                    }))
        }
        let found = folders.sorted()
        interpreter.withLock { $0 = found }
        return found
    }

    func kernel(_ nbID: String, project: ProjectRef, name: String, userID: String) async throws -> NotebookKernel {
        let interpreterFolders = await interpreterFolders()
        // Found or started under the lock: a kernel another request is starting is waited for, not
        // started twice.
        let (k, fresh) = try kernels.withLock { d -> (NotebookKernel, Bool) in
            if let k = d[nbID], !k.isDead.load(ordering: .relaxed) { return (k, false) }
            let mine = d.values.filter { $0.startedBy == userID && !$0.isDead.load(ordering: .relaxed) }.count
            guard mine < perUser else {
                throw HTTPError(
                    .tooManyRequests, code: "rate_limited",
                    message: "You have \(mine) notebook kernels running (the limit is \(perUser)); they end after "
                        + "\(Int(idleSeconds / 60)) idle minutes")
            }
            let launch = try sandbox.launch(
                [python, "-c", KernelBridge.source, name], workspace: project.wsID, project: project.root,
                cwd: project.root, extraReadOnly: interpreterFolders)
            let k = NotebookKernel(process: try KernelProcess.start(launch), kernelName: name, startedBy: userID)
            d[nbID] = k
            return (k, true)
        }
        if !fresh {
            try await k.waitReady()
            return k
        }
        do {
            try await k.start()
            try await store.holdKernel(nbID, instance: instanceID, at: clock.now())
        } catch {
            await k.stop()
            kernels.withLock { if $0[nbID] === k { $0[nbID] = nil } }
            try? await store.releaseKernel(nbID, instance: instanceID)
            throw APIError.unavailable(
                "Notebook kernels need jupyter_client and ipykernel for \(python) "
                    + "(pip install jupyter_client ipykernel): "
                    + ((error as? HTTPError)?.message ?? "the kernel did not start"))
        }
        return k
    }

    func existing(_ nbID: String) -> NotebookKernel? { kernels.withLock { $0[nbID] } }

    /// Ends kernels nobody used for `--kernel-idle-minutes`.
    func reap() async {
        let all = kernels.withLock { $0 }
        let now = Date()
        for (id, k) in all {
            let idle = now.timeIntervalSince(await k.lastUsed)
            if await k.state != .busy && idle > idleSeconds {
                await k.stop()
                kernels.withLock { if $0[id] === k { $0[id] = nil } }
                try? await store.releaseKernel(id, instance: instanceID)
            }
        }
    }

    func stopAll() async {
        let all = kernels.withLock { d -> [String: NotebookKernel] in
            defer { d.removeAll() }
            return d
        }
        for (id, k) in all {
            await k.stop()
            try? await store.releaseKernel(id, instance: instanceID)
        }
    }

    /// Runs a code cell's source on the kernel: publishes its events and returns its outcome with the
    /// outputs as nbformat stores them.
    func execute(
        _ kernel: NotebookKernel, code: String, runID: String
    ) async -> (status: String, count: Int?, outputs: [JSONValue], ms: Int) {
        let start = kilnMonotonicNanos()
        let topic = Self.topic(runID)
        var outputs: [JSONValue] = []
        var kept = 0
        var dropped = 0
        var status = "ok"
        var count: Int? = nil
        // Consecutive stream text of one name is one output, as Jupyter keeps it: its pieces are
        // gathered and joined once.
        var pending: (name: JSONValue, parts: [String])? = nil
        func flush() {
            guard let p = pending else { return }
            outputs.append(["output_type": "stream", "name": p.name, "text": .string(p.parts.joined())])
            pending = nil
        }
        func keep(_ o: JSONValue) {
            let size: Int
            if case .object(let x) = o, x["output_type"] == "stream" {
                size = NotebookFile.text(x["text"]).utf8.count + 64
            } else {
                size = o.jsonText.utf8.count
            }
            if kept + size > Self.maxKeptOutput {
                dropped += size
                return
            }
            kept += size
            if case .object(let x) = o, x["output_type"] == "stream", let name = x["name"] {
                if let p = pending, p.name == name {
                    pending!.parts.append(NotebookFile.text(x["text"]))
                    return
                }
                flush()
                pending = (name, [NotebookFile.text(x["text"])])
                return
            }
            flush()
            outputs.append(o)
        }
        for await e in await kernel.execute(code, id: runID) {
            guard case .object(var o) = e, let type = o["event"]?.stringValue else { continue }
            o["event"] = nil
            o["id"] = nil
            switch type {
            case "started":
                if case .int(let n)? = o["execution_count"] { count = n }
                _ = try? await bus.publish(topic: topic, type: "cell.started", data: JSONValue.object(o).jsonText)
            case "stream":
                keep(["output_type": "stream", "name": o["name"] ?? "stdout", "text": o["text"] ?? ""])
                // A kernel batches output: a large batch goes out in pieces, so no event outgrows a
                // subscriber's buffer.
                for piece in Self.pieces(o["text"]?.stringValue ?? "") {
                    _ = try? await bus.publish(
                        topic: topic, type: "stream",
                        data: JSONValue.object(["name": o["name"] ?? "stdout", "text": .string(piece)]).jsonText)
                }
            case "display_data", "execute_result":
                var out: [String: JSONValue] = [
                    "output_type": .string(type), "data": o["data"] ?? [:], "metadata": o["metadata"] ?? [:],
                ]
                if type == "execute_result" { out["execution_count"] = o["execution_count"] ?? .null }
                keep(.object(out))
                _ = try? await bus.publish(topic: topic, type: type, data: JSONValue.object(o).jsonText)
            case "error":
                keep([
                    "output_type": "error", "ename": o["ename"] ?? "", "evalue": o["evalue"] ?? "",
                    "traceback": o["traceback"] ?? [],
                ])
                _ = try? await bus.publish(topic: topic, type: "error", data: JSONValue.object(o).jsonText)
            case "done":
                status = o["status"]?.stringValue ?? "ok"
                if case .int(let n)? = o["execution_count"] { count = n }
            case "dead":
                status = "dead"
                _ = try? await bus.publish(topic: topic, type: "kernel.dead", data: JSONValue.object(o).jsonText)
            default: break
            }
        }
        await kernel.finished()
        flush()
        if dropped > 0 {
            outputs.append([
                "output_type": "stream", "name": "stderr",
                "text": .string(
                    "[Kiln: \(dropped) more bytes of output were not kept (the limit is 8 MiB per cell)]\n"),
            ])
        }
        let ms = Int((kilnMonotonicNanos() &- start) / 1_000_000)
        _ = try? await bus.publish(
            topic: topic, type: "cell.completed",
            data: JSONValue.object([
                "status": .string(status), "duration_ms": .int(ms), "execution_count": count.map { .int($0) } ?? .null,
            ]).jsonText)
        return (status, count, outputs, ms)
    }

    /// Outputs as nbformat stores them: multiline text as lists of lines.
    static func stored(_ outputs: [JSONValue]) -> JSONValue {
        .array(
            outputs.map { o in
                guard case .object(var x) = o else { return o }
                if let t = x["text"] { x["text"] = NotebookFile.lines(NotebookFile.text(t)) }
                return .object(x)
            })
    }

    /// Text cut into pieces of at most 64 KiB, at character boundaries.
    static func pieces(_ text: String, max: Int = 64 * 1024) -> [String] {
        let bytes = Array(text.utf8)
        guard bytes.count > max else { return [text] }
        var out: [String] = []
        var start = 0
        while start < bytes.count {
            var end = min(start + max, bytes.count)
            // Back off to a character boundary (a UTF-8 continuation byte is 10xxxxxx).
            while end < bytes.count && end > start + 1 && (bytes[end] & 0xC0) == 0x80 { end -= 1 }
            out.append(String(decoding: bytes[start..<end], as: UTF8.self))
            start = end
        }
        return out
    }

    static func sourceHash(_ code: String) -> String { Crypto.hex(Crypto.sha256(Array(code.utf8))) }
}
