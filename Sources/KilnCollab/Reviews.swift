import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// Reviews: a member asks others to look at a run, a file, a diff or a job; reviewers comment
/// (with `@name` mentions, which notify) and give a verdict. The review's state follows the
/// verdicts: changes requested by anyone wins, else approved once someone approved, else open.
extension CollabService {
    func requestReview(_ i: ReviewInput, wsID: String, by p: Principal, ip: String) async throws -> JSONValue {
        guard ReviewLimits.subjects.contains(i.subject.type) else {
            throw APIError.validation("subject.type must be run, file, diff or job", field: "subject.type")
        }
        let note = i.note ?? ""
        guard note.count <= ReviewLimits.maxNote else {
            throw APIError.validation("note may have at most \(ReviewLimits.maxNote) characters", field: "note")
        }
        if let lines = i.subject.lines,
            lines.isEmpty || lines.count > 2 || lines.contains(where: { $0 < 1 })
                || (lines.count == 2 && lines[1] < lines[0])
        {
            throw APIError.validation("subject.lines is [first] or [first, last], from 1", field: "subject.lines")
        }
        let title = try await reviewSubjectTitle(i.subject, wsID: wsID)
        let reviewers = Array(Set(i.reviewers)).sorted()
        guard !reviewers.isEmpty, reviewers.count <= ReviewLimits.maxReviewers else {
            throw APIError.validation("reviewers lists 1 to \(ReviewLimits.maxReviewers) user ids", field: "reviewers")
        }
        for r in reviewers {
            guard r != p.userID else {
                throw APIError.validation("You cannot review your own request", field: "reviewers")
            }
            guard IDs.isValid(r, prefix: "usr"), let role = try await members?.role(userID: r, wsID: wsID) else {
                throw APIError.validation("\(r.prefix(40)) is not a member of this workspace", field: "reviewers")
            }
            guard role >= CollabPermission.write.minimumRole else {
                throw APIError.validation(
                    "\(try await name(r)) is a viewer and cannot give a verdict", field: "reviewers")
            }
        }
        var subject: [String: JSONValue] = [
            "type": .string(i.subject.type), "id": .string(i.subject.id), "title": .string(title),
        ]
        if let path = i.subject.path { subject["path"] = .string(path) }
        if let lines = i.subject.lines { subject["lines"] = .array(lines.map { .int($0) }) }
        let now = clock.now()
        let id = IDs.ordered("rev", at: now)
        let subjectText = JSONValue.object(subject).jsonText
        try await store.db.write { [store] tx in
            try store.insertReview(
                tx, id: id, wsID: wsID, subject: subjectText, note: note, by: p.userID,
                reviewers: reviewers, at: now)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "review.requested", actorUserID: p.userID, actorKeyID: p.apiKeyID, wsID: wsID,
                    resourceType: "review", resourceID: id, ip: ip,
                    details: ["reviewers": .array(reviewers.map { .string($0) })]), at: now)
        }
        await publish(
            "review.requested", wsID: wsID, actor: p.userID,
            [
                "review_id": .string(id), "title": .string(title), "reviewers": .array(reviewers.map { .string($0) }),
                "subject": .object(subject),
            ])
        return try await review(id, wsID: wsID)
    }

    /// Checks the subject is in the workspace; its title for lists and notifications.
    func reviewSubjectTitle(_ s: ReviewInput.Subject, wsID: String) async throws -> String {
        switch s.type {
        case "run":
            guard let agents, let run = try await agents.run(s.id, wsID: wsID)?.objectValue else {
                throw APIError.notFound("No such run in this workspace")
            }
            return "agent run “" + CollabFeed.short(run["prompt"]?.stringValue ?? s.id, 60) + "”"
        case "job":
            guard IDs.isValid(s.id, prefix: "job"), try await workspace(of: "job_id", s.id) == wsID else {
                throw APIError.notFound("No such job in this workspace")
            }
            return "job \(s.id)"
        default:
            guard let projects, IDs.isValid(s.id, prefix: "prj"), let project = try await projects.lookup(s.id),
                project.wsID == wsID
            else { throw APIError.notFound("No such project in this workspace") }
            if let path = s.path {
                guard !path.isEmpty, path.utf8.count <= 1024, !path.split(separator: "/").contains("..") else {
                    throw APIError.validation("subject.path is a path inside the project", field: "subject.path")
                }
                return "\(project.name)/\(path)"
            }
            guard s.type == "diff" else {
                throw APIError.validation("subject.path is required for a file", field: "subject.path")
            }
            return "changes in \(project.name)"
        }
    }

    func reviewRow(_ id: String, wsID: String) async throws -> Row {
        guard IDs.isValid(id, prefix: "rev"), let r = try await store.review(id), r.string("ws_id") == wsID else {
            throw APIError.notFound("No such review")
        }
        return r
    }

    func reviewJSON(_ r: Row, full: Bool) async throws -> JSONValue {
        let id = r.string("id") ?? ""
        var o: [String: JSONValue] = [
            "id": .string(id), "ws_id": .string(r.string("ws_id") ?? ""),
            "subject": r.string("subject").flatMap { try? JSONValue(parsing: $0) } ?? .null,
            "note": .string(r.string("note") ?? ""), "requested_by": .string(r.string("requested_by") ?? ""),
            "state": .string(r.string("state") ?? "open"),
            "created_at": .string(HTTPDate.iso8601(r.date("created_at") ?? Date())),
            "updated_at": .string(HTTPDate.iso8601(r.date("updated_at") ?? Date())),
        ]
        var reviewers: [JSONValue] = []
        for x in try await store.reviewers(id) {
            let uid = x.string("user_id") ?? ""
            reviewers.append([
                "user_id": .string(uid), "name": .string(try await name(uid)),
                "verdict": x.string("verdict").map { .string($0) } ?? .null,
                "decided_at": x.date("decided_at").map { .string(HTTPDate.iso8601($0)) } ?? .null,
            ])
        }
        o["reviewers"] = .array(reviewers)
        guard full else { return .object(o) }
        var comments: [JSONValue] = []
        for c in try await store.comments(id) {
            let uid = c.string("user_id") ?? ""
            comments.append([
                "id": .string(c.string("id") ?? ""), "user_id": .string(uid), "name": .string(try await name(uid)),
                "body": .string(c.string("body") ?? ""), "path": c.string("path").map { .string($0) } ?? .null,
                "line": c.int("line").map { .int($0) } ?? .null,
                "mentions": c.string("mentions").flatMap { try? JSONValue(parsing: $0) } ?? .array([]),
                "created_at": .string(HTTPDate.iso8601(c.date("created_at") ?? Date())),
            ])
        }
        o["comments"] = .array(comments)
        // A run under review shows what it did: its transcript and diffs, and its receipt.
        if let s = o["subject"]?.objectValue, s["type"]?.stringValue == "run", let runID = s["id"]?.stringValue {
            let wsID = r.string("ws_id") ?? ""
            o["run"] = try await agents?.shareable(runID, wsID: wsID) ?? .null
            o["receipt"] = try await receipts?.receipt(runID: runID, wsID: wsID) ?? .null
        }
        return .object(o)
    }

    func review(_ id: String, wsID: String) async throws -> JSONValue {
        try await reviewJSON(try await reviewRow(id, wsID: wsID), full: true)
    }

    func reviews(wsID: String, state: String?, page: PageRequest) async throws -> JSONValue {
        if let state, !ReviewLimits.states.contains(state) {
            throw APIError.validation("state must be open, approved or changes_requested", field: "state")
        }
        let rows = try await store.reviews(wsID: wsID, state: state, before: page.cursor, limit: page.limit + 1)
        var items: [JSONValue] = []
        for r in rows { items.append(try await reviewJSON(r, full: false)) }
        let p = Page(fetched: items, limit: page.limit) { $0.objectValue?["id"]?.stringValue ?? "" }
        return ["items": .array(p.items), "next_cursor": p.nextCursor.map { .string($0) } ?? .null]
    }

    func comment(_ id: String, wsID: String, _ i: CommentInput, by p: Principal, ip: String) async throws -> JSONValue {
        let r = try await reviewRow(id, wsID: wsID)
        let body = i.body.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !body.isEmpty, body.count <= ReviewLimits.maxComment else {
            throw APIError.validation("body must have 1 to \(ReviewLimits.maxComment) characters", field: "body")
        }
        if let path = i.path, path.isEmpty || path.utf8.count > 1024 {
            throw APIError.validation("path must have 1 to 1024 bytes", field: "path")
        }
        if let line = i.line, line < 1 { throw APIError.validation("line counts from 1", field: "line") }
        let mentions = try await mentioned(in: body, wsID: wsID)
        let now = clock.now()
        let cid = IDs.ordered("rvc", at: now)
        let mentionsJSON = JSONValue.array(mentions.map { .string($0) })
        try await store.db.write { [store] tx in
            try store.insertComment(
                tx, id: cid, reviewID: id, userID: p.userID, body: body, path: i.path, line: i.line,
                mentions: mentionsJSON.jsonText, at: now)
        }
        let title =
            r.string("subject").flatMap { try? JSONValue(parsing: $0) }?.objectValue?["title"]?.stringValue ?? id
        await publish(
            "review.commented", wsID: wsID, actor: p.userID,
            ["review_id": .string(id), "title": .string(title), "comment_id": .string(cid), "mentions": mentionsJSON])
        return [
            "id": .string(cid), "review_id": .string(id), "user_id": .string(p.userID),
            "name": .string(try await name(p.userID)), "body": .string(body),
            "path": i.path.map { .string($0) } ?? .null, "line": i.line.map { .int($0) } ?? .null,
            "mentions": mentionsJSON, "created_at": .string(HTTPDate.iso8601(now)),
        ]
    }

    /// The members a text mentions: `@name` (spaces dropped, any case), `@` the part of their address
    /// before the `@`, or `@usr_…`.
    func mentioned(in text: String, wsID: String) async throws -> [String] {
        var tokens = Set<String>()
        var i = text.startIndex
        while let at = text[i...].firstIndex(of: "@") {
            var j = text.index(after: at)
            while j < text.endIndex, text[j].isLetter || text[j].isNumber || "._-".contains(text[j]) {
                j = text.index(after: j)
            }
            var t = text[text.index(after: at)..<j].lowercased()
            while t.hasSuffix(".") { t.removeLast() }
            if !t.isEmpty && tokens.count < 50 { tokens.insert(t) }
            i = j
        }
        guard !tokens.isEmpty, let members else { return [] }
        var out: [String] = []
        for (uid, _) in try await members.memberRoles(wsID: wsID) {
            let p = try await person(uid)
            let names: Set<String> = [
                p.name.lowercased().filter { !$0.isWhitespace }, p.handle.lowercased(), uid.lowercased(),
            ]
            if !names.isDisjoint(with: tokens) { out.append(uid) }
        }
        return out
    }

    func verdict(_ id: String, wsID: String, _ i: VerdictInput, by p: Principal, ip: String) async throws -> JSONValue {
        guard ReviewLimits.verdicts.contains(i.verdict) else {
            throw APIError.validation("verdict must be approve, request_changes or comment", field: "verdict")
        }
        let r = try await reviewRow(id, wsID: wsID)
        let isReviewer = try await store.reviewers(id).contains { $0.string("user_id") == p.userID }
        guard isReviewer else {
            throw APIError(.forbidden, message: "Only a reviewer this review asked can give it a verdict")
        }
        let now = clock.now()
        let state = try await store.db.write { [store] tx in
            let state = try store.setVerdict(tx, reviewID: id, userID: p.userID, verdict: i.verdict, at: now)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "review.verdict", actorUserID: p.userID, actorKeyID: p.apiKeyID, wsID: wsID,
                    resourceType: "review", resourceID: id, ip: ip,
                    details: ["verdict": .string(i.verdict), "state": .string(state)]), at: now)
            return state
        }
        let title =
            r.string("subject").flatMap { try? JSONValue(parsing: $0) }?.objectValue?["title"]?.stringValue ?? id
        await publish(
            "review.verdict", wsID: wsID, actor: p.userID,
            [
                "review_id": .string(id), "title": .string(title), "verdict": .string(i.verdict),
                "state": .string(state),
                "requested_by": .string(r.string("requested_by") ?? ""),
            ])
        return try await review(id, wsID: wsID)
    }

    func reviewWorkspace(_ id: String) async throws -> String? {
        guard IDs.isValid(id, prefix: "rev") else { return nil }
        return try await store.reviewWorkspace(id)
    }
}
