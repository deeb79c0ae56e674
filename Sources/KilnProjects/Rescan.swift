import CShims
import Foundation
import Glibc
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore
import Synchronization

extension ProjectService {
    static let maxIndexBytes = 8 * 1024 * 1024
    /// Content per index segment: bounds what one rescan thread holds in memory while building.
    static let segmentBytes: UInt64 = 16 << 20

    func index(_ projectID: String) throws -> TrigramIndex { try cache.index(indexRoot + "/" + projectID) }

    /// The project's symbols, stored beside its trigram index.
    func symbolTable(_ projectID: String) -> SymbolTable { cache.symbolTable(indexRoot + "/" + projectID) }

    /// Indexes the project first when it never was (or a migration asked for it again), or when its
    /// symbol table was lost (the rescan extracts every file's symbols again).
    func ensureIndexed(_ projectID: String, root: String, vcs: String) async throws {
        guard try await !store.isIndexed(projectID) || !symbolTable(projectID).isComplete else { return }
        _ = try await rescan(projectID: projectID, root: root, vcs: vcs, jobID: IDs.make("job"))
        try await store.markIndexed(projectID, at: clock.now())
    }

    /// git's list of a repository's tracked and untracked, not-ignored files; nil when the project
    /// is not a git repository or git is missing or fails (the built-in walk stands in).
    func gitFiles(_ root: String, vcs: String, projectID: String) async throws -> [String]? {
        guard vcs == "git" else { return nil }
        let args = ["ls-files", "-z", "--cached", "--others", "--exclude-standard"]
        guard let ls = await git.local(args, root: root, owner: projectID, timeout: 600) else { return nil }
        return ls.stdout.split(separator: 0).compactMap { String(validating: Array($0), as: UTF8.self) }
    }

    /// The built-in walk: readdir with the entry types the file system reports, `.gitignore` files
    /// applied as git would. Symlinked folders are not entered: each folder is opened beneath the
    /// root through no symlink (where openat2 exists), so one swapped for a link after its parent was
    /// read does not lead out either. `visit` gets each file's relative path and the file as found
    /// (valid during the call), and stops the walk by answering false.
    static func walk(_ root: String, visit: (String, WalkedFile) -> Bool) {
        var stack: [(String, GitIgnore)] = [("", GitIgnore())]
        var entries: [(name: String, type: Int32)] = []
        var st = stat()
        let rootFD = SafePath.openRoot(root)
        defer { if rootFD >= 0 { close(rootFD) } }
        while let (rel, parentIgnores) = stack.popLast() {
            let d: OpaquePointer?
            if rootFD >= 0 {
                let fd = SafePath.openBeneath(rootFD, rel, flags: O_RDONLY | O_DIRECTORY)
                d = fd >= 0 ? fdopendir(fd) : nil
                if fd >= 0 && d == nil { close(fd) }
            } else {
                d = opendir(rel.isEmpty ? root : root + "/" + rel)
            }
            guard let d else { continue }
            defer { closedir(d) }
            let fd = dirfd(d)
            entries.removeAll(keepingCapacity: true)
            var hasIgnoreFile = false
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
                    String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
                }
                if name == "." || name == ".." || name == ".git" { continue }
                var type = Int32(e.pointee.d_type)
                if type == Int32(DT_UNKNOWN) {
                    guard fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
                    let fmt = st.st_mode & S_IFMT
                    type =
                        fmt == S_IFDIR
                        ? Int32(DT_DIR)
                        : fmt == S_IFREG ? Int32(DT_REG) : fmt == S_IFLNK ? Int32(DT_LNK) : Int32(DT_UNKNOWN)
                }
                if name == ".gitignore" { hasIgnoreFile = true }
                entries.append((name, type))
            }
            // The folder's own rules apply to its entries; the folders above were checked before
            // the walk entered this one.
            var ignores = parentIgnores
            if hasIgnoreFile, let text = Self.readText(at: fd, ".gitignore") { ignores.add(text, base: rel) }
            for (name, type) in entries {
                let childRel = rel.isEmpty ? name : rel + "/" + name
                let isDir = type == Int32(DT_DIR)
                if ignores.decide(childRel, isDirectory: isDir) { continue }
                if isDir {
                    stack.append((childRel, ignores))
                } else if type == Int32(DT_REG) || type == Int32(DT_LNK) {
                    if !visit(childRel, WalkedFile(directory: fd, name: name, isRegular: type == Int32(DT_REG))) {
                        return
                    }
                }
            }
        }
    }

    /// A small text file read relative to an open directory (a `.gitignore`), at most 1 MiB.
    static func readText(at dirFD: Int32, _ name: String) -> String? {
        let fd = openat(dirFD, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while out.count < 1 << 20 {
            let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, 65536) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return String(validating: out, as: UTF8.self)
    }

    /// Re-indexes a project: unchanged files (size + mtime, then hash) are not re-read or re-parsed.
    /// One rescan per project at a time; a second waits for the first.
    func rescan(projectID: String, root: String, vcs: String, jobID: String) async throws -> RescanStats {
        let index = try index(projectID)
        return try await index.exclusive {
            try await rescanExclusive(
                index, projectID: projectID, root: root, vcs: vcs, topic: ProjectService.rescanTopic(jobID))
        }
    }

    static func rescanTopic(_ jobID: String) -> String { "rescan:\(jobID)" }

    private func rescanExclusive(
        _ index: TrigramIndex, projectID: String, root: String, vcs: String,
        topic: String
    ) async throws -> RescanStats {
        let stored = try await store.storedFiles(projectID)
        var phases: [String: JSONValue] = [:]
        var mark = kilnMonotonicNanos()
        func phase(_ name: String) {
            let now = kilnMonotonicNanos()
            phases[name + "_ms"] = .int(Int((now - mark) / 1_000_000))
            mark = now
        }
        let symbols = symbolTable(projectID)
        let symbolsComplete = symbols.isComplete
        let listed = try await gitFiles(root, vcs: vcs, projectID: projectID)
        phase("list")

        // First pass, on every core: the walk feeds the readers, which read, hash, index and run
        // the findings rules. Search sees the result as soon as it is committed.
        let threads = max(1, min(4, ProcessInfo.processInfo.activeProcessorCount))
        let shared = RescanShared<RescanItem>(open: true, stats: RescanStats())
        // Where new files are opened from (beneath it, through no symlink).
        let rootFD = SafePath.openRoot(root)
        defer { if rootFD >= 0 { close(rootFD) } }
        let walker = RescanWalk(
            root: root, stored: stored, live: index.livePaths(), symbolsComplete: symbolsComplete,
            beneath: rootFD >= 0, queue: shared)
        let contents = RescanContents()
        let workers = (0..<threads).map { _ in RescanWorker(shared, index: index, contents: contents, rootFD: rootFD) }
        let reporter = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(500))
                if Task.isCancelled { break }
                _ = try? await bus.publish(topic: topic, type: "progress", value: shared.stats.withLock { $0 })
            }
        }
        defer { reporter.cancel() }
        await onThreads(threads + 1, stop: { shared.stop() }) { i in
            if i == threads { walker.run(listed) } else { workers[i].run() }
        }
        phases["walk_ms"] = .int(Int(walker.duration / 1_000_000))
        phases["readers_waited_ms"] = .int(Int(shared.waitedNanos / 1_000_000))
        let seen = walker.seen
        let built = workers.flatMap(\.built)
        if let failure = workers.compactMap(\.error).first {
            index.discard(built)
            throw failure
        }
        if Task.isCancelled {
            index.discard(built)
            throw CancellationError()
        }
        let results = workers.flatMap(\.results)
        // The reader threads' segment buffers are freed by now; their heaps go back to the system
        // rather than stay beside what the second pass allocates on other threads.
        _ = kiln_malloc_trim()
        phase("read")

        // The index first: if the database write fails, the next rescan sees old hashes and redoes
        // these files, and the index keeps one live copy per path.
        let gone = stored.keys.filter { !seen.contains($0) }
        shared.stats.withLock { $0.removed = gone.count }
        let dropped = results.filter { $0.contentChanged && ($0.binary || $0.hash == nil) }.map(\.path)
        do {
            try index.commit(adding: built, removing: gone + dropped)
            try index.compactIfNeeded(segmentBytes: ProjectService.segmentBytes)
        } catch {
            index.discard(built)
            throw error
        }
        try await bus.publish(topic: topic, type: "indexed", value: shared.stats.withLock { $0 })
        phase("commit")

        // Second pass: findings and symbols of the files read. A copy takes those of its content's
        // file, relabelled, unless that file changed or went before the pass was over; then the copy
        // is read itself.
        // Findings: only the changed text files that hold all trigrams of some anchor are read again;
        // the size rule needs no content.
        var findings: [String: [Finding]] = [:]
        for r in results where r.contentChanged {
            if let f = Findings.largeFileFinding(path: r.path, size: r.size) { findings[r.path] = [f] }
        }
        let findingItems = results.filter { $0.contentChanged && $0.anchors != 0 && !$0.copy }.map {
            ($0.file, $0.anchors)
        }
        async let scannedFirst = scanFindings(findingItems)
        let symbolItems = workers.flatMap(\.symbolItems) + walker.reextract
        var found = await extractSymbols(symbolItems, root: root, threads: threads)
        var scanned = await scannedFirst
        try Task.checkCancellation()

        let copies = workers.flatMap(\.copies)
        var findingLabels: [String: [String]] = [:]
        var symbolLabels: [String: [String]] = [:]
        var rereadFindings: [(FileToRead, UInt32)] = []
        var rereadSymbols: [SymbolItem] = []
        for c in copies {
            if c.content.unchanged(length: c.length) {
                if c.anchors != 0 { findingLabels[c.content.file.path, default: []].append(c.file.path) }
                if c.symbolsReused { symbolLabels[c.content.file.path, default: []].append(c.file.path) }
                continue
            }
            if c.anchors != 0 { rereadFindings.append((c.file, c.anchors)) }
            if c.symbolsReused, let language = c.language {
                rereadSymbols.append(
                    SymbolItem(
                        path: c.file.path, full: c.file.full, device: c.file.device, inode: c.file.inode,
                        language: language))
            }
        }
        if !rereadFindings.isEmpty { scanned.merge(await scanFindings(rereadFindings)) { $0 + $1 } }
        if !rereadSymbols.isEmpty { found += await extractSymbols(rereadSymbols, root: root, threads: threads) }
        for (content, labels) in findingLabels {
            guard let those = scanned[content] else { continue }
            for label in labels {
                scanned[label, default: []] += those.map {
                    Finding(
                        path: label, line: $0.line, rule: $0.rule, severity: $0.severity, message: $0.message,
                        excerpt: $0.excerpt)
                }
            }
        }
        if !symbolLabels.isEmpty { found += found.map { $0.copies(symbolLabels) } }
        phases["symbol_files"] = .int(symbolItems.count + rereadSymbols.count)
        phases["symbol_copies"] = .int(symbolLabels.values.reduce(0) { $0 + $1.count })
        findings.merge(scanned) { $0 + $1 }
        let allFindings = findings
        let symbolCount = found.reduce(0) { $0 + $1.count }
        let findingCount = allFindings.values.reduce(0) { $0 + $1.count }
        let stats = shared.stats.withLock { s in
            s.symbols = symbolCount
            s.findings = findingCount
            return s
        }
        phase("symbols")

        // The symbol table and the database at once (the database on its own writer thread). If the
        // database write fails, the next rescan sees old hashes and reads these files again; if the
        // table's does, it is dropped as incomplete and the next rescan extracts every file again.
        // One transaction: one sync of the log, however many files changed.
        async let databaseWritten: Void = store.storeRescan(
            projectID, results: results, findings: allFindings, gone: gone)
        // Every file read again drops its old symbols, whatever it holds now.
        let replaced = Set(results.filter(\.contentChanged).map(\.path)).union(gone)
        var symbolTableFailure: (any Error)?
        if !symbolsComplete || !replaced.isEmpty {
            do { try symbols.replace(removing: replaced, adding: consume found, fresh: !symbolsComplete) } catch {
                symbolTableFailure = error
            }
        }
        phase("symbol_table")
        try await databaseWritten
        if let symbolTableFailure { throw symbolTableFailure }
        _ = kiln_malloc_trim()
        phase("database")
        phases["project_id"] = .string(projectID)
        phases["files"] = .int(stats.filesSeen)
        ServerLog.info("rescan finished", phases)
        return stats
    }

    /// Whether universal-ctags can be handed the path in its file list (no tab or line break).
    static func ctagsCanTake(_ path: String) -> Bool {
        !path.utf8.contains(where: { $0 == 10 || $0 == 9 || $0 == 13 })
    }

    /// The symbols of `items`: universal-ctags (several processes at once) where it is installed and
    /// parses the language, the built-in extractor for Swift, for paths ctags cannot be handed, for
    /// batches ctags fails on, and for everything when ctags is not installed.
    func extractSymbols(_ items: [SymbolItem], root: String, threads: Int) async -> [SymbolBatch] {
        let useCtags = ProcessRunner.which("ctags") != nil
        var builtIn: [SymbolItem] = []
        var ctagsItems: [SymbolItem] = []
        for item in items {
            if useCtags && item.language != "Swift" && Self.ctagsCanTake(item.path) {
                ctagsItems.append(item)
            } else {
                builtIn.append(item)
            }
        }
        ctagsItems.sort { $0.path < $1.path }
        let chunks = stride(from: 0, to: ctagsItems.count, by: 400).map {
            Array(ctagsItems[$0..<min($0 + 400, ctagsItems.count)])
        }
        let symbolShared = RescanShared(items: builtIn, stats: RescanStats())
        let symbolWorkers = (0..<threads).map { _ in SymbolWorker(symbolShared) }
        async let builtInDone: Void = onThreads(threads, stop: { symbolShared.stop() }) { symbolWorkers[$0].run() }
        let ctagsSymbols: [SymbolBatch] = await withTaskGroup(of: SymbolBatch.self) { group in
            var all: [SymbolBatch] = []
            var next = 0
            func add(_ g: inout TaskGroup<SymbolBatch>) {
                guard next < chunks.count else { return }
                let chunk = chunks[next]
                next += 1
                g.addTask {
                    if let found = await SymbolExtractor.ctags(root: root, files: chunk.map(\.path)) { return found }
                    var out = SymbolBatch()
                    let file = FileSlurper()
                    for item in chunk {
                        if let (_, content) = file.read(
                            item.full, device: item.device, inode: item.inode, limit: ProjectService.maxIndexBytes),
                            let bytes = content
                        {
                            out.add(contentsOf: SymbolExtractor.extract(path: item.path, bytes: bytes))
                        }
                    }
                    return out
                }
            }
            for _ in 0..<threads { add(&group) }
            while let found = await group.next() {
                all.append(found)
                add(&group)
            }
            return all
        }
        await builtInDone
        return symbolWorkers.map(\.symbols) + ctagsSymbols
    }

    /// The findings of the text files `items` (each with its anchor mask), read on a thread of their own.
    func scanFindings(_ items: [(FileToRead, UInt32)]) async -> [String: [Finding]] {
        guard !items.isEmpty else { return [:] }
        let shared = RescanShared(items: items, stats: RescanStats())
        let worker = FindingsWorker(shared)
        await onThreads(1, stop: { shared.stop() }) { _ in worker.run() }
        return worker.findings
    }

    /// Starts a rescan job in the background; progress goes to the `rescan:<job>` topic.
    func startRescan(_ project: Project, root: String, userID: String) async throws -> String {
        let jobID = IDs.make("job")
        let pid = project.id
        try await store.startRescan(jobID: jobID, projectID: pid, wsID: project.wsId, at: clock.now())
        let (me, bus) = (self, self.bus)
        let vcs = project.vcs
        let scope = EventScope(wsID: project.wsId, actorID: userID, projectID: pid)
        jobs.run("rescan \(jobID)") {
            do {
                let stats = try await me.rescan(projectID: pid, root: root, vcs: vcs, jobID: jobID)
                let statsJSON = String(decoding: try JSONCoding.encode(stats), as: UTF8.self)
                try await me.store.finishRescan(jobID: jobID, projectID: pid, stats: statsJSON, at: me.clock.now())
                try await bus.publish(topic: ProjectService.rescanTopic(jobID), type: "progress", value: stats)
                try await bus.publish(
                    topic: ProjectService.rescanTopic(jobID), type: "done", value: stats, scope: scope)
            } catch {
                try? await me.store.failRescan(jobID: jobID, projectID: pid, at: me.clock.now())
                _ = try? await bus.publish(
                    topic: ProjectService.rescanTopic(jobID), type: "failed",
                    data: JSONValue.object(["message": .string("Rescan failed")]).jsonText, scope: scope)
                throw error
            }
        }
        return jobID
    }

    func workspaceOfRescan(_ jobID: String) async throws -> String? {
        guard IDs.isValid(jobID, prefix: "job") else { return nil }
        return try await store.workspaceOfRescan(jobID)
    }
}
