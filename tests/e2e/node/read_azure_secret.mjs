// Reads one secret through keyledger with Azure's official SecretClient, changed only in its
// vault URL and credential; trusts keyledger's certificate through NODE_EXTRA_CA_CERTS.
// Prints the value, then the names it may list; exits 3 with Key Vault's status and code
// when the read is refused.
import { SecretClient } from "@azure/keyvault-secrets";

const credential = {
  // keyledger's bearer token, handed over as Azure's SDKs take a token.
  async getToken() {
    return { token: process.env.KEYLEDGER_TOKEN, expiresOnTimestamp: Date.now() + 3600_000 };
  },
};
const client = new SecretClient(process.env.KEYLEDGER_AZURE_VAULT_URL, credential, {
  disableChallengeResourceVerification: true, // 127.0.0.1 is not a name under vault.azure.net
});
try {
  const secret = await client.getSecret(process.argv[2]);
  console.log(secret.value);
} catch (error) {
  console.log(`refused ${error.statusCode} ${error.code}`);
  process.exit(3);
}
const names = [];
for await (const properties of client.listPropertiesOfSecrets()) names.push(properties.name);
console.log(names.join(","));
