import Foundation
import KilnCore
import KilnHTTP

/// `POST /api/collab/share-link`.
struct ShareInput: Decodable, Sendable, SchemaRequiredFields {
    static let requiredFields = ["ws_id", "subject"]
    struct Subject: Decodable, Sendable {
        let type: String
        let id: String
        /// A file subject's path inside the project (`id` is the project).
        let path: String?
    }
    let wsId: String?
    let subject: Subject
    let expiresInHours: Int?
    let password: String?
}

enum ShareLimits {
    static let maxHours = 720
    static let defaultHours = 72
    static let maxPassword = 256
    /// Wrong passwords a link takes in 10 minutes before it refuses every try for the rest of them.
    static let passwordTries = 10
    /// A shared file is copied into the link when it is made (the file as it was then): at most this.
    static let maxFileBytes = 1 << 20
}

/// `POST /api/collab/invite`.
struct InviteInput: Decodable, Sendable, SchemaRequiredFields {
    static let requiredFields = ["ws_id", "email", "role"]
    let wsId: String?
    let email: String
    let role: Role
}

/// `POST /api/collab/invitations/:token/accept`: empty for a signed-in user, `{name, password}` to
/// register through the invitation.
struct AcceptInput: Decodable, Sendable {
    let name: String?
    let password: String?
}

enum InviteLimits {
    static let lifetime: TimeInterval = 7 * 24 * 3600
    /// Invitations (mails) a workspace may send in an hour.
    static let perHour = 50
}

/// `POST /api/collab/request-review`.
struct ReviewInput: Decodable, Sendable, SchemaRequiredFields {
    static let requiredFields = ["ws_id", "subject", "reviewers"]
    struct Subject: Decodable, Sendable {
        let type: String
        let id: String
        let path: String?
        let lines: [Int]?
    }
    let wsId: String?
    let subject: Subject
    let reviewers: [String]
    let note: String?
}

/// `POST /api/collab/reviews/:review_id/comments`.
struct CommentInput: Decodable, Sendable, SchemaRequiredFields {
    static let requiredFields = ["body"]
    let body: String
    let path: String?
    let line: Int?
}

/// `POST /api/collab/reviews/:review_id/verdict`.
struct VerdictInput: Decodable, Sendable, SchemaRequiredFields {
    static let requiredFields = ["verdict"]
    let verdict: String
}

enum ReviewLimits {
    static let maxReviewers = 20
    static let maxNote = 4000
    static let maxComment = 10_000
    static let verdicts: Set<String> = ["approve", "request_changes", "comment"]
    static let states: Set<String> = ["open", "approved", "changes_requested"]
    static let subjects: Set<String> = ["run", "file", "diff", "job"]
}

/// `PUT /api/collab/notification-settings` `{settings: {kind: in_app|email|off}}`.
struct SettingsInput: Decodable, Sendable, SchemaRequiredFields {
    static let requiredFields = ["settings"]
    let settings: [String: String]
}

/// What a user is notified of, and how (`in_app` by default; `email` also mails, batched; `off`).
enum NotificationKind {
    static let all = [
        "review_requested", "review_verdict", "mention", "run_ended", "invited", "role_changed", "share_link_opened",
        "approval_requested", "approval_decided",
    ]
    static let modes: Set<String> = ["in_app", "email", "off"]
    /// At most one mail per kind and user in this time; the rest wait and go out together.
    static let mailInterval: TimeInterval = 600
    /// Notifications are kept this long.
    static let kept: TimeInterval = 90 * 24 * 3600
}
