import Foundation
import Testing

@testable import KilnStore

/// The trigram index on real files in a temporary folder: candidates against a brute-force scan,
/// retiring documents, reopening from disk, a damaged manifest, compaction.
@Suite struct TrigramIndexTests {
    func tempDir() throws -> String {
        let dir = NSTemporaryDirectory() + "kiln-tri-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// Every document's text by path, as the tests' stand-in for the files the index describes.
    final class Texts: @unchecked Sendable { var byPath: [String: String] = [:] }
    let texts = Texts()

    func build(_ index: TrigramIndex, _ docs: [(String, String)], segmentBytes: UInt64 = 1 << 30) throws -> [Int] {
        var ids: [Int] = []
        var b = try index.makeBuilder()
        // A text seen before in this build is added as a copy, as a rescan does.
        var first: [String: TrigramIndex.DocumentRef] = [:]
        for (path, text) in docs {
            texts.byPath[path] = text
            let n = UInt64(text.utf8.count)
            if let target = first[text] {
                b.addCopy(path: path, stamp: .init(length: n, modified: 7, device: 1, inode: n), of: target)
                continue
            }
            let stamp = TrigramIndex.Stamp(length: 0, modified: 7, device: 1, inode: n)
            var t = text
            first[text] = t.withUTF8 { b.add(path: path, content: UnsafeRawBufferPointer($0), stamp: stamp) }
            // The next segment reuses the finished builder's buffers, as a rescan does: its counting
            // table must be all zero again, or postings would land under the wrong keys.
            if b.contentBytes >= segmentBytes {
                try b.finish()
                ids.append(b.segmentID)
                b = try index.makeBuilder(reusing: b)
            }
        }
        if b.documentCount > 0 {
            try b.finish()
            ids.append(b.segmentID)
        } else {
            b.discard()
        }
        return ids
    }

    func candidates(_ index: TrigramIndex, _ q: String, caseSensitive: Bool = true) -> Set<String> {
        var out = Set<String>()
        index.snapshot().forEachCandidate(TrigramIndex.keys(of: Array(q.utf8), asciiOnly: !caseSensitive)) { seg, doc in
            let path = seg.paths[Int(doc)]
            let text = texts.byPath[path] ?? ""
            // The stamp comes back as stored, its length set from the content.
            #expect(
                seg.stamp(doc)
                    == .init(length: UInt64(text.utf8.count), modified: 7, device: 1, inode: UInt64(text.utf8.count)))
            let hit = caseSensitive ? text.contains(q) : text.lowercased().contains(q.lowercased())
            if hit { out.insert(seg.paths[Int(doc)]) }
            return true
        }
        return out
    }

    /// Random documents over a small alphabet (so trigrams repeat across documents), some of them
    /// the same text as another.
    func corpus(_ n: Int) -> [(String, String)] {
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array("abcdeABCDE _\nλé")
        var docs: [(String, String)] = []
        for i in 0..<n {
            let len = Int(rng.next() % 400)
            // Every tenth document repeats an earlier one's text (a copy).
            let text =
                i % 10 == 9
                ? docs[i - 5].1 : String((0..<len).map { _ in alphabet[Int(rng.next() % UInt64(alphabet.count))] })
            docs.append(("dir\(i % 7)/file\(i).txt", text))
        }
        return docs
    }

    @Test func candidatesEqualABruteForceScan() throws {
        let index = try TrigramIndex(directory: try tempDir())
        let docs = corpus(300)
        try index.commit(adding: try build(index, docs, segmentBytes: 8_000), removing: [])
        #expect(index.snapshot().segments.count > 3)
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            let source = Array(docs[Int(rng.next() % 300)].1)
            guard source.count > 8 else { continue }
            let start = Int(rng.next() % UInt64(source.count - 6))
            let len = 1 + Int(rng.next() % 6)
            let q = String(source[start..<(start + len)])
            let caseSensitive = rng.next() % 2 == 0
            let expected = Set(
                docs.filter { caseSensitive ? $0.1.contains(q) : $0.1.lowercased().contains(q.lowercased()) }.map(\.0))
            #expect(
                candidates(index, q, caseSensitive: caseSensitive) == expected,
                "\(q.debugDescription) case \(caseSensitive)")
        }
    }

    /// The postings are exactly each document's distinct trigrams, each document once per key and in
    /// order: the branch-free builder stores an entry on every byte and must count only new keys.
    @Test func postingsHoldEachDocumentsDistinctTrigramsOnce() throws {
        let index = try TrigramIndex(directory: try tempDir())
        var rng = SystemRandomNumberGenerator()
        // Runs (one key over and over), both cases, non-ASCII bytes, the shortest documents, and
        // random text in which a key first met in the second half also occurs in the first.
        var docs: [(String, String)] = [
            ("a", ""), ("b", "x"), ("c", "xy"), ("d", "xyz"), ("e", "aaaaaaaaaaaa"),
            ("f", "        indented\n        again"), ("g", "AbCabc ABC"), ("h", "é€😀λλλ"),
            ("i", "ab" + String(repeating: "ba", count: 50)),
        ]
        let alphabet = Array("abcAB  \n\tλ{}")
        for i in 0..<120 {
            let len = Int(rng.next() % 3000)
            docs.append(("r\(i)", String((0..<len).map { _ in alphabet[Int(rng.next() % UInt64(alphabet.count))] })))
        }
        try index.commit(adding: try build(index, docs, segmentBytes: 20_000), removing: [])
        let segments = index.snapshot().segments
        #expect(segments.count > 3)
        // What each key's postings must be: the documents holding it, by segment.
        var expected: [Int: [UInt32: [UInt32]]] = [:]
        for seg in segments {
            for doc in 0..<UInt32(seg.documentCount) where seg.contentOf(doc) == nil {
                let text = texts.byPath[seg.paths[Int(doc)]] ?? ""
                for key in TrigramIndex.keys(of: Array(text.utf8), asciiOnly: false) {
                    expected[seg.id, default: [:]][key, default: []].append(doc)
                }
            }
        }
        var mismatches = 0
        for seg in segments {
            let want = expected[seg.id] ?? [:]
            // No entry beyond the expected ones (a repeated or stray key would add one).
            #expect(seg.postingCount == want.values.reduce(0) { $0 + $1.count }, "segment \(seg.id)")
            for (key, docs) in want where Array(seg.postings(for: key) ?? .init(start: nil, count: 0)) != docs.sorted()
            { mismatches += 1 }
        }
        #expect(mismatches == 0)
    }

    @Test func retiredDocumentsDisappearAndTheIndexReopens() throws {
        let dir = try tempDir()
        let index = try TrigramIndex(directory: dir)
        try index.commit(
            adding: try build(index, [("a.txt", "alpha needle one"), ("b.txt", "beta"), ("c.txt", "gamma needle")]),
            removing: [])
        #expect(candidates(index, "needle") == ["a.txt", "c.txt"])
        // a.txt changes (a new copy in a new segment), c.txt is deleted.
        try index.commit(adding: try build(index, [("a.txt", "alpha haystack")]), removing: ["c.txt"])
        #expect(candidates(index, "needle").isEmpty)
        #expect(candidates(index, "haystack") == ["a.txt"])
        #expect(index.livePaths() == ["a.txt", "b.txt"])
        #expect(index.snapshot().documentCount == 2)

        let reopened = try TrigramIndex(directory: dir)
        #expect(!reopened.wasReset)
        #expect(reopened.livePaths() == ["a.txt", "b.txt"])
        #expect(candidates(reopened, "haystack") == ["a.txt"])

        // Compaction (a third of the documents are dead) keeps exactly the live documents, in fewer segments.
        try reopened.compactIfNeeded(segmentBytes: 1 << 20)
        #expect(reopened.snapshot().segments.count == 1)
        #expect(candidates(reopened, "beta") == ["b.txt"] && candidates(reopened, "haystack") == ["a.txt"])
        #expect(candidates(reopened, "alpha") == ["a.txt"] && candidates(reopened, "needle").isEmpty)
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".idx") }
        #expect(files.count == 1)
    }

    @Test func compactionMergesPostingsOfTheLiveDocumentsOnly() throws {
        let dir = try tempDir()
        let index = try TrigramIndex(directory: dir)
        var docs = corpus(300)
        try index.commit(adding: try build(index, docs, segmentBytes: 1_500), removing: [])
        let before = index.snapshot().segments.count
        #expect(before > 32)
        // A third retired, a few replaced by new copies.
        let removed = Set(docs.indices.filter { $0 % 3 == 0 }.map { docs[$0].0 })
        let replaced = docs.indices.filter { $0 % 3 == 1 && $0 % 7 == 0 }.map {
            (docs[$0].0, "replacement text \($0) zebra")
        }
        try index.commit(adding: try build(index, replaced), removing: removed)
        docs = docs.filter { !removed.contains($0.0) }.map { d in replaced.first { $0.0 == d.0 } ?? d }
        try index.compactIfNeeded(segmentBytes: 20_000)
        #expect(index.snapshot().segments.count < before / 4)
        #expect(index.snapshot().documentCount == docs.count)
        let reopened = try TrigramIndex(directory: dir)
        #expect(reopened.livePaths() == Set(docs.map(\.0)))
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let source = Array(docs[Int(rng.next() % UInt64(docs.count))].1)
            guard source.count > 8 else { continue }
            let start = Int(rng.next() % UInt64(source.count - 6))
            let len = 3 + Int(rng.next() % 4)
            let q = String(source[start..<(start + len)])
            let expected = Set(docs.filter { $0.1.contains(q) }.map(\.0))
            #expect(candidates(reopened, q) == expected, "\(q.debugDescription)")
        }
        #expect(candidates(reopened, "zebra") == Set(replaced.map(\.0)))
        // Nothing to do the second time.
        let ids = reopened.snapshot().segments.map(\.id)
        try reopened.compactIfNeeded(segmentBytes: 20_000)
        #expect(reopened.snapshot().segments.map(\.id) == ids)
    }

    @Test func aDamagedIndexStartsEmpty() throws {
        let dir = try tempDir()
        let index = try TrigramIndex(directory: dir)
        let ids = try build(index, [("a.txt", "some text")])
        try index.commit(adding: ids, removing: [])
        // A truncated segment table: the manifest names it, the sizes disagree.
        let idx = dir + "/\(ids[0]).idx"
        let data = try Data(contentsOf: URL(fileURLWithPath: idx))
        try data.prefix(data.count - 3).write(to: URL(fileURLWithPath: idx))
        let reopened = try TrigramIndex(directory: dir)
        #expect(reopened.wasReset && reopened.livePaths().isEmpty)
        // Only the content seed is left, and it is kept.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["content.seed"])
        #expect(reopened.contentSeed == index.contentSeed)
        try "{not json".write(toFile: dir + "/manifest.json", atomically: true, encoding: .utf8)
        #expect(try TrigramIndex(directory: dir).wasReset)
    }

    /// Adds `path` as a copy of `target`, with the stamp `build` would give it.
    func copy(_ b: TrigramIndex.Builder, _ path: String, of target: TrigramIndex.DocumentRef, text: String) {
        texts.byPath[path] = text
        let n = UInt64(text.utf8.count)
        b.addCopy(path: path, stamp: .init(length: n, modified: 7, device: 1, inode: n), of: target)
    }

    func allLive(_ index: TrigramIndex) -> [String] {
        var out: [String] = []
        index.snapshot().forEachCandidate([]) { seg, doc in
            out.append(seg.paths[Int(doc)])
            return true
        }
        return out.sorted()
    }

    @Test func copiesAreFoundThroughTheirContentAndOutliveItsPath() throws {
        let dir = try tempDir()
        let index = try TrigramIndex(directory: dir)
        let text = "alpha needle one"
        // a.txt has the content; c.txt (same segment) and d.txt (another segment) are copies of it.
        let b1 = try index.makeBuilder()
        var t = text
        let a = t.withUTF8 {
            b1.add(
                path: "a.txt", content: UnsafeRawBufferPointer($0),
                stamp: .init(length: 0, modified: 7, device: 1, inode: 16))
        }
        texts.byPath["a.txt"] = text
        copy(b1, "c.txt", of: a, text: text)
        #expect(b1.documentCount == 2 && b1.contentBytes == 16)
        for (path, other) in [("e.txt", "echo"), ("f.txt", "foxtrot")] {
            var o = other
            texts.byPath[path] = other
            let n = UInt64(other.utf8.count)
            _ = o.withUTF8 {
                b1.add(
                    path: path, content: UnsafeRawBufferPointer($0),
                    stamp: .init(length: 0, modified: 7, device: 1, inode: n))
            }
        }
        try b1.finish()
        let b2 = try index.makeBuilder()
        copy(b2, "d.txt", of: a, text: text)
        try b2.finish()
        let other = try build(index, [("b.txt", "beta needle")])
        try index.commit(adding: [b1.segmentID, b2.segmentID] + other, removing: [])
        #expect(candidates(index, "needle") == ["a.txt", "b.txt", "c.txt", "d.txt"])
        #expect(candidates(index, "alpha") == ["a.txt", "c.txt", "d.txt"])
        #expect(candidates(index, "beta") == ["b.txt"])
        #expect(allLive(index) == ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt", "f.txt"])
        #expect(index.snapshot().documentCount == 6)

        // a.txt changes: its old content stays for its copies.
        try index.commit(adding: try build(index, [("a.txt", "haystack")]), removing: [])
        #expect(candidates(index, "alpha") == ["c.txt", "d.txt"])
        #expect(candidates(index, "haystack") == ["a.txt"])
        #expect(index.snapshot().segments.contains { $0.id == b1.segmentID })
        let reopened = try TrigramIndex(directory: dir)
        #expect(!reopened.wasReset)
        #expect(candidates(reopened, "alpha") == ["c.txt", "d.txt"])
        #expect(reopened.livePaths() == ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt", "f.txt"])

        // Compaction (b, e and f go too, so half the documents kept are dead): c.txt now holds the
        // content, d.txt is its copy.
        try reopened.commit(adding: [], removing: ["b.txt", "e.txt", "f.txt"])
        try reopened.compactIfNeeded(segmentBytes: 1 << 20)
        #expect(reopened.snapshot().segments.count == 1)
        #expect(candidates(reopened, "alpha") == ["c.txt", "d.txt"])
        #expect(candidates(reopened, "needle") == ["c.txt", "d.txt"])
        #expect(allLive(reopened) == ["a.txt", "c.txt", "d.txt"])
        let seg = reopened.snapshot().segments[0]
        #expect(
            (0..<UInt32(seg.documentCount)).filter { seg.contentOf($0) != nil }.map { seg.paths[Int($0)] } == ["d.txt"])

        // Once no copy is left either, the old content's segment goes.
        let again = try TrigramIndex(directory: dir)
        try again.commit(adding: [], removing: ["c.txt", "d.txt"])
        #expect(candidates(again, "alpha").isEmpty)
        #expect(allLive(again) == ["a.txt"])
        #expect(again.snapshot().segments.count == 1)
    }

    @Test func aCopyOfADocumentThatIsNotThereIsRefused() throws {
        let dir = try tempDir()
        let index = try TrigramIndex(directory: dir)
        let kept = try build(index, [("a.txt", "alpha")])
        try index.commit(adding: kept, removing: [])
        let b = try index.makeBuilder()
        copy(b, "x.txt", of: .init(segment: 999, doc: 0), text: "alpha")
        try b.finish()
        #expect(throws: TrigramIndex.IndexError.self) { try index.commit(adding: [b.segmentID], removing: []) }
        #expect(index.livePaths() == ["a.txt"])
        // A copy whose length differs from its content's is refused too.
        let b2 = try index.makeBuilder()
        copy(b2, "y.txt", of: .init(segment: kept[0], doc: 0), text: "alphabet")
        try b2.finish()
        #expect(throws: TrigramIndex.IndexError.self) { try index.commit(adding: [b2.segmentID], removing: []) }
        #expect(try TrigramIndex(directory: dir).livePaths() == ["a.txt"])
    }

    @Test func theContentSeedIsSecretRandomAndSurvivesReopening() throws {
        let dir = try tempDir()
        let other = try tempDir()
        let index = try TrigramIndex(directory: dir)
        #expect(try TrigramIndex(directory: dir).contentSeed == index.contentSeed)
        #expect(try TrigramIndex(directory: other).contentSeed != index.contentSeed)
        let attrs = try FileManager.default.attributesOfItem(atPath: dir + "/content.seed")
        #expect((attrs[.posixPermissions] as? Int) == 0o600)
        #expect((attrs[.size] as? Int) == 8)
        // A damaged seed file is replaced by a new seed.
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: dir + "/content.seed"))
        let renewed = try TrigramIndex(directory: dir)
        #expect(renewed.contentSeed != index.contentSeed)
        #expect(try TrigramIndex(directory: dir).contentSeed == renewed.contentSeed)
    }

    @Test func keysFoldCaseAndSkipNonASCIIWhenAsked() {
        #expect(TrigramIndex.keys(of: Array("ab".utf8), asciiOnly: false).isEmpty)
        #expect(
            Set(TrigramIndex.keys(of: Array("ABC".utf8), asciiOnly: false))
                == Set(TrigramIndex.keys(of: Array("abc".utf8), asciiOnly: false)))
        #expect(TrigramIndex.keys(of: Array("aλb".utf8), asciiOnly: true).isEmpty)
        #expect(TrigramIndex.keys(of: Array("aλb".utf8), asciiOnly: false).count == 2)
    }
}
