// swift-tools-version:6.0
// Kiln: one binary, no third-party packages. System libraries come in through
// system-library targets (SQLite, OpenSSL) and a tiny C shim of our own.
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "kiln",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "kiln", targets: ["kiln"]),
        .executable(name: "kiln-bench", targets: ["kiln-bench"]),
    ],
    targets: [
        // System libraries and our C shim.
        .systemLibrary(name: "CSQLite", path: "Sources/CSQLite", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL", providers: [.apt(["libssl-dev"])]),
        .target(name: "CShims", path: "Sources/CShims"),

        // The engine and the shared layers.
        .target(name: "KilnHTTP", dependencies: ["CShims", "COpenSSL"], swiftSettings: strict),
        .target(name: "KilnCrypto", dependencies: ["COpenSSL"], swiftSettings: strict),
        .target(name: "KilnStore", dependencies: ["CSQLite", "CShims"], swiftSettings: strict),
        .target(name: "KilnCore", dependencies: ["CShims", "KilnHTTP", "KilnStore", "KilnCrypto", "COpenSSL"], swiftSettings: strict),
        // Domain modules.
        .target(name: "KilnAuth", dependencies: ["KilnCore", "KilnHTTP", "KilnStore", "KilnCrypto"], swiftSettings: strict),
        .target(name: "KilnAccount", dependencies: ["KilnAuth", "KilnCore", "KilnHTTP", "KilnStore", "KilnCrypto"], swiftSettings: strict),
        .target(name: "KilnProjects", dependencies: ["CShims", "KilnCore", "KilnHTTP", "KilnStore", "KilnCrypto"], swiftSettings: strict),
        .target(name: "KilnShell", dependencies: ["KilnProjects", "KilnCore", "KilnHTTP", "KilnStore", "KilnCrypto", "CShims"], swiftSettings: strict),
        .target(name: "KilnPTY", dependencies: ["KilnProjects", "KilnCore", "KilnHTTP", "KilnStore", "CShims"], swiftSettings: strict),
        .target(name: "KilnAgents", dependencies: ["KilnShell", "KilnProjects", "KilnCore", "KilnHTTP", "KilnStore", "KilnCrypto"], swiftSettings: strict),
        .target(name: "KilnBudget", dependencies: ["KilnAgents", "KilnProjects", "KilnCore", "KilnHTTP", "KilnStore"], swiftSettings: strict),
        .target(name: "KilnReceipts", dependencies: ["KilnBudget", "KilnAgents", "KilnProjects", "KilnCore", "KilnHTTP", "KilnStore", "KilnCrypto"], swiftSettings: strict),
        .target(name: "KilnWorkspaces", dependencies: ["KilnAuth", "KilnCore", "KilnHTTP", "KilnStore"], swiftSettings: strict),

        .target(name: "KilnApp", dependencies: ["KilnHTTP", "KilnCore", "KilnStore", "KilnCrypto", "COpenSSL", "KilnAuth", "KilnAccount", "KilnWorkspaces", "KilnProjects", "KilnShell", "KilnPTY", "KilnAgents", "KilnBudget", "KilnReceipts"], swiftSettings: strict),

        // Executables.
        .executableTarget(name: "kiln", dependencies: ["KilnApp", "KilnHTTP", "KilnCore", "KilnBudget", "KilnReceipts"], swiftSettings: strict),
        .executableTarget(name: "kiln-bench", dependencies: ["KilnHTTP"], path: "Sources/kiln-bench", swiftSettings: strict),

        // Tests.
        .testTarget(name: "KilnHTTPTests", dependencies: ["KilnHTTP", "CShims", "KilnCore"], swiftSettings: strict),
        .testTarget(name: "KilnCryptoTests", dependencies: ["KilnCrypto"], swiftSettings: strict),
        .testTarget(name: "KilnCoreTests", dependencies: ["KilnCore", "KilnHTTP"], swiftSettings: strict),
        .testTarget(name: "KilnStoreTests", dependencies: ["KilnStore"], swiftSettings: strict),
        .testTarget(name: "KilnAppTests", dependencies: ["KilnApp", "KilnHTTP", "KilnCore", "KilnStore", "KilnCrypto", "KilnAuth", "KilnAccount", "KilnWorkspaces", "KilnProjects", "KilnShell", "KilnPTY", "KilnAgents", "KilnBudget", "KilnReceipts"], swiftSettings: strict),
    ],
    swiftLanguageModes: [.v6]
)
