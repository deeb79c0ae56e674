import Foundation
import KilnCrypto

/// The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it: no channel
/// binding ("n,,"), the user name left empty (the server takes it from the start-up packet).
/// The server proves it knows the password too; a wrong server signature fails the login.
struct SCRAMClient {
    let password: [UInt8]
    let clientNonce: String
    let user: String
    private var clientFirstBare: String { "n=\(user),r=\(clientNonce)" }
    private var expectedServerSignature: [UInt8] = []

    init(password: String, user: String = "", clientNonce: String? = nil) {
        // SASLprep is left out: the server applies it only where it changes something, and uses the
        // password as given when it is not valid for it, which matches what is sent here for the
        // passwords Kiln is configured with (no unnormalised Unicode).
        self.password = Array(password.utf8)
        self.user = user
        self.clientNonce = clientNonce ?? Base64URL.encode(Crypto.randomBytes(18))
    }

    /// The SASLInitialResponse data.
    var clientFirst: String { "n,," + clientFirstBare }

    /// From server-first (`r=…,s=…,i=…`) to client-final (`c=biws,r=…,p=…`).
    mutating func clientFinal(serverFirst: String) throws -> String {
        var attrs: [Character: String] = [:]
        for part in serverFirst.split(separator: ",") where part.count >= 2 && part.dropFirst().first == "=" {
            attrs[part.first!] = String(part.dropFirst(2))
        }
        guard let nonce = attrs["r"], nonce.hasPrefix(clientNonce), nonce.count > clientNonce.count,
            let saltB64 = attrs["s"], let salt = Data(base64Encoded: saltB64),
            let iterations = attrs["i"].flatMap({ Int($0) }), (1...10_000_000).contains(iterations)
        else { throw PostgresError.authentication("the database server's SCRAM challenge is malformed") }
        let salted = Crypto.pbkdf2SHA256(password: password, salt: Array(salt), iterations: iterations)
        let clientKey = Crypto.hmacSHA256(key: salted, data: Array("Client Key".utf8))
        let storedKey = Crypto.sha256(clientKey)
        let withoutProof = "c=biws,r=\(nonce)"
        let authMessage = Array("\(clientFirstBare),\(serverFirst),\(withoutProof)".utf8)
        let signature = Crypto.hmacSHA256(key: storedKey, data: authMessage)
        let proof = zip(clientKey, signature).map { $0 ^ $1 }
        let serverKey = Crypto.hmacSHA256(key: salted, data: Array("Server Key".utf8))
        expectedServerSignature = Crypto.hmacSHA256(key: serverKey, data: authMessage)
        return withoutProof + ",p=" + Data(proof).base64EncodedString()
    }

    /// Checks server-final (`v=…`): the server knew the password as well.
    func verify(serverFinal: String) throws {
        if serverFinal.hasPrefix("e=") {
            throw PostgresError.authentication("the database server refused the login: \(serverFinal.dropFirst(2))")
        }
        guard serverFinal.hasPrefix("v="), let sig = Data(base64Encoded: String(serverFinal.dropFirst(2))),
            !expectedServerSignature.isEmpty, Crypto.constantTimeEqual(Array(sig), expectedServerSignature)
        else { throw PostgresError.authentication("the database server could not prove it knows the password") }
    }

    /// PostgreSQL's old md5 exchange: "md5" + md5(md5(password ‖ user) ‖ salt).
    static func md5Response(user: String, password: String, salt: ArraySlice<UInt8>) -> String {
        let inner = Crypto.md5Hex(Array(password.utf8) + Array(user.utf8))
        return "md5" + Crypto.md5Hex(Array(inner.utf8) + Array(salt))
    }
}
